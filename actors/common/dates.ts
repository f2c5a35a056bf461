// Dates as mail headers write them.

/** The last second formatted, and its text: every accepted message stamps its Received and often its Date header with "now". */
let lastSecond = Number.NaN;
let lastText = "";

/** RFC 5322 §3.3 date-time in UTC ("Mon, 30 Nov 2026 16:35:27 +0000"): Date, Received, DSN fields. */
export const rfc5322Date = (at: number): string => {
  const second = Math.floor(at / 1000);
  if (second !== lastSecond) {
    lastText = new Date(second * 1000).toUTCString().replace(/GMT$/, "+0000");
    lastSecond = second;
  }
  return lastText;
};
