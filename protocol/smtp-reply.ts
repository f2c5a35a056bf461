// SMTP reply text (RFC 5321 §4.2) into a Reply value: the basic code, the enhanced
// status code (RFC 3463) and the text. Pure; called once, where a reply arrives from
// the wire (actors/delivery/smtp-client.ts); everything after reads the value.
import type { Reply } from "./delivery.ts";

const BASIC = /^([2-5]\d\d)(?:[ -]|$)/;
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;

/** The reply, or undefined when the text is no SMTP reply (no 2xx–5xx code in front). */
export const parseReply = (raw: string): Reply | undefined => {
  const lines = raw.split(/\r?\n/).filter((line) => line.length > 0);
  const first = lines[0] ?? "";
  const basic = BASIC.exec(first);
  if (!basic) return undefined;
  const code = Number(basic[1]);
  const strip = (line: string) => line.replace(BASIC, "");
  const rest = strip(first);
  const enhancedMatch = ENHANCED.exec(rest);
  // RFC 3463 §2: the enhanced class must agree with the basic reply's first digit.
  const enhanced = enhancedMatch && enhancedMatch[1] === String(code)[0] ? enhancedMatch[0] : undefined;
  const text = lines
    .map((line, n) => {
      const body = n === 0 ? rest : strip(line);
      return enhanced && body.startsWith(enhanced) ? body.slice(enhanced.length) : body;
    })
    .map((part) => part.trim())
    .filter(Boolean)
    .join(" ");
  return enhanced ? { _tag: "Reply", code, enhanced, text } : { _tag: "Reply", code, text };
};
