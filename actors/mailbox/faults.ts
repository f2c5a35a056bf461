// Fault injection for end-to-end tests of crash recovery. Off unless the environment
// variable is set; nothing in a production config can turn it on.
//
// TERN_FAULT_KILL_AFTER_MAILBOX_COMMIT=1: the process kills itself (SIGKILL) right after
// the first mailbox commit that stored a new message, before the ack is sent, which is
// exactly the crash that makes the queue redeliver an entry the mailbox already holds.
import type { MailboxObserver } from "./actor.ts";

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
