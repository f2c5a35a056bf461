// Dates as mail headers write them.

/** RFC 5322 §3.3 date-time in UTC ("Mon, 30 Nov 2026 16:35:27 +0000"): Date, Received, DSN fields. */
export const rfc5322Date = (at: number): string => new Date(at).toUTCString().replace(/GMT$/, "+0000");
