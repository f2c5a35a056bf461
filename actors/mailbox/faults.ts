// Fault injection for end-to-end tests of crash recovery. Off unless the environment
// variable is set; nothing in a production config can turn it on.
//
// TERN_FAULT_KILL_AFTER_MAILBOX_COMMIT=1: the process kills itself (SIGKILL) right after
// the first mailbox commit that stored a new message, before the ack is sent, which is
// exactly the crash that makes the queue redeliver an entry the mailbox already holds.
//
// TERN_FAULT_KILL_IN_MOVE=<point>: the process kills itself (SIGKILL) when a mailbox move
// reaches that point (actors/mailbox/move.ts): `source-frozen` (the source recorded its
// freeze, before answering), `target-frozen` (the target has the final snapshot, before
// its commit), `target-committed` (after the commit, before the KV flips and the source
// drops its copy).
import type { MailboxObserver } from "./actor.ts";

export type MoveCrashPoint = "source-frozen" | "target-frozen" | "target-committed";

export const moveCrashFrom = (env: NodeJS.ProcessEnv): ((point: MoveCrashPoint) => void) => {
  const at = env.TERN_FAULT_KILL_IN_MOVE;
  return (point) => {
    if (point === at) process.kill(process.pid, "SIGKILL");
  };
};

export const withFaults = (observer: MailboxObserver, env: NodeJS.ProcessEnv): MailboxObserver => {
  if (env.TERN_FAULT_KILL_AFTER_MAILBOX_COMMIT !== "1") return observer;
  return {
    ...observer,
    stored: (user, bytes) => {
      observer.stored?.(user, bytes);
      process.kill(process.pid, "SIGKILL");
    },
  };
};
