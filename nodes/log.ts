// The node's log: pino, one JSON object per line on stdout, in the vocabulary of
// protocol/log.ts. Every line starts the same way, so a filter can anchor on it:
//   {"level":"info","time":"2026-12-01T08:20:45.154Z","node":"a","event":"message.accepted",…}
// `level` is pino's label, not its number (operators grep and filter for "warn"); `time`
// is ISO-8601 in UTC with milliseconds; the text of a line, when it has one, is `text`
// (pino's `msg` would collide with the name Tern once used for the queue id).
//
// Lines written in one event-loop turn go out in one write, as before pino: stdout to a
// pipe is synchronous on Linux, a write per line costs more than formatting it, and
// pino's asynchronous destination (sonic-boom) spends more CPU again on the thread pool
// (measured: ~7 µs a line against ~3.5 µs batched). The batch is written at the end of
// the turn, so a quiet node's line appears at once, and the last lines are written on
// exit; kill -9 may lose one turn's lines, never mail.
import pino from "pino";
import type { Log, LogFields } from "../protocol/log.ts";

export type { Log, LogFields, LogLevel } from "../protocol/log.ts";

/** Collects lines and writes each turn's in one call; `flush` writes what is pending now. */
export const turnBatched = (write: (text: string) => void) => {
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const text = pending.join("");
    pending = [];
    write(text);
  };
  return {
    write: (line: string) => {
      if (pending.length === 0) setImmediate(flush);
      pending.push(line);
    },
    flush,
  };
};

/** The pino options every node's logger has (exported for the tests of the format). */
export const loggerOptions = (node: string): pino.LoggerOptions => ({
  base: { node },
  messageKey: "text",
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
});

export const makeLog = (node: string, write: (text: string) => void = (text) => process.stdout.write(text)): Log => {
  const destination = turnBatched(write);
  process.once("exit", destination.flush);
  const logger = pino(loggerOptions(node), destination);
  return (event, fields?: LogFields) => {
    if (fields === undefined) return logger.info({ event });
    // pino leaves out undefined values: the level chooses the method and is not repeated.
    if (fields.level === undefined || fields.level === "info") return logger.info({ event, ...fields, level: undefined });
    logger[fields.level]({ event, ...fields, level: undefined });
  };
};
