// Structured logs: one JSON object per line on stdout, with fixed keys
// (node, event, and where they apply conn, txn, msg, entry, rcpt, actor).
// Lines written in one event-loop turn go out in one write: stdout to a pipe is
// synchronous on Linux, and a write per line costs more than the rest of a message.
export type Log = (event: string, fields?: Record<string, unknown>) => void;

export const makeLog = (node: string, write: (text: string) => void = (text) => process.stdout.write(text)): Log => {
  let pending: string[] = [];
  const flush = () => {
    const text = pending.join("");
    pending = [];
    write(text);
  };
  process.once("exit", () => pending.length > 0 && flush());
  return (event, fields = {}) => {
    if (pending.length === 0) setImmediate(flush);
    pending.push(`${JSON.stringify({ time: new Date().toISOString(), node, event, ...fields })}\n`);
  };
};
