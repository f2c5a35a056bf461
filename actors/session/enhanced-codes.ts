// smtp-server adds an RFC 3463 enhanced status code chosen from the numeric reply code
// alone, so "554 Relay access denied" would go out as 554 5.6.0 (a media error). Tern's
// replies carry their own precise code ("5.7.1 Relay access denied"); this makes
// smtp-server keep a code the text already starts with instead of adding a second one.
// Loaded once, before any listener starts.
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";

const LEADING_ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3} /;

interface Sender {
  send(code: number, data?: string | string[], context?: string | false): unknown;
}

const prototype = SMTPConnection.prototype as unknown as Sender & { __ternEnhancedCodes?: true };
if (!prototype.__ternEnhancedCodes) {
  const send = prototype.send;
  prototype.send = function (this: Sender, code, data, context) {
    const ownCode = typeof data === "string" && LEADING_ENHANCED_CODE.test(data);
    return send.call(this, code, data, ownCode ? false : context);
  };
  prototype.__ternEnhancedCodes = true;
}
