// An overall cap on the sessions one listener holds open, all clients together. Each
// session holds a file descriptor, and the node shares one descriptor limit between its
// listeners, LMDB, NATS, outbound delivery and /readyz: without a cap, enough idle
// clients (POP3 allows 10 minutes of silence) starve all of them and the whole node goes
// offline. Above the cap a new client is refused at once with a temporary reply, and its
// place comes back when any session ends. Per-IP limits (session/guard.ts) come on top.

export type ConnectionEvent = "opened" | "closed" | "refused";

export interface ConnectionCap {
  /** Takes a place for a new session; false when the listener is full and the client is to be refused. */
  readonly admit: () => boolean;
  /** Gives back a place taken by `admit` (call once per admitted session, when it ends). */
  readonly release: () => void;
  readonly open: () => number;
}

export const makeConnectionCap = (options: {
  readonly max: number;
  /** Every admission, end and refusal, for metrics. */
  readonly observe?: ((event: ConnectionEvent) => void) | undefined;
  /** Called once each time the listener fills up (not on every refusal), for one log line per episode. */
  readonly onFull?: ((open: number) => void) | undefined;
}): ConnectionCap => {
  let open = 0;
  let full = false;
  return {
    admit: () => {
      if (open >= options.max) {
        if (!full) options.onFull?.(open);
        full = true;
        options.observe?.("refused");
        return false;
      }
      open++;
      options.observe?.("opened");
      return true;
    },
    release: () => {
      open = Math.max(0, open - 1);
      if (open < options.max) full = false;
      options.observe?.("closed");
    },
    open: () => open,
  };
};
