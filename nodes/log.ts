// Structured logs: one JSON object per line on stdout, with fixed keys
// (node, event, and where they apply conn, msg, entry, actor).
export type Log = (event: string, fields?: Record<string, unknown>) => void;

export const makeLog = (node: string, write: (line: string) => void = (line) => process.stdout.write(line)): Log =>
  (event, fields = {}) => write(`${JSON.stringify({ time: new Date().toISOString(), node, event, ...fields })}\n`);
