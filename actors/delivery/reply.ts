// SMTP replies as values: the basic code (RFC 5321), the enhanced status code (RFC 3463)
// and the text. Pure; the rest of delivery decides on these fields, never on substrings.

export interface Reply {
  /** 200–599, or undefined when the text is not an SMTP reply (a local error description). */
  readonly code: number | undefined;
  /** "5.1.1", when the reply carries one whose class matches the basic code. */
  readonly enhanced: string | undefined;
  /** The text after the codes, continuation lines joined with a space. */
  readonly text: string;
}

const BASIC = /^([2-5]\d\d)[ -]?/;
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;

export const parseReply = (raw: string): Reply => {
  const lines = raw.split(/\r?\n/).filter((line) => line.length > 0);
  const first = lines[0] ?? "";
  const basic = BASIC.exec(first);
  if (!basic) return { code: undefined, enhanced: undefined, text: lines.join(" ").trim() };
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
  return { code, enhanced, text };
};

/** The status for a DSN (RFC 3464 §2.3.4): the enhanced code, else one made from the basic code's class. */
export const statusOf = (reply: Reply, fallbackClass: "4" | "5"): string =>
  reply.enhanced ?? (reply.code !== undefined && reply.code >= 400 ? `${String(reply.code)[0]}.0.0` : `${fallbackClass}.0.0`);

/** The enhanced code's subject and detail ("1.1" of "5.1.1"). */
export const subjectDetail = (enhanced: string): string => enhanced.slice(enhanced.indexOf(".") + 1);
