// The node's budget of outbound SMTP connections, shared by every site. A connection
// holds a permit from opening until its socket is gone (the release is tied to the
// connection's end, so a crashed handler cannot leak one). When the budget is spent,
// the connection idle the longest is closed to make room; when none is idle, openers wait.

/**
 * Gives a permit back. `unused`: no connection was opened with it (the opener gave up
 * first), so a budget that counts openings (site leases) counts this one as not opened.
 */
export type Release = (unused?: boolean) => void;

export interface ConnectionBudget {
  /** Resolves with the permit's release once a connection may be opened. */
  readonly acquire: () => Promise<Release>;
  /**
   * Offers an idle connection for closing when room is needed; the returned function
   * withdraws the offer. A budget may also close it at once, synchronously (a cluster-wide
   * site lease that shrank while the connection was busy: actors/delivery/site-lease.ts).
   */
  readonly idle: (close: () => void) => () => void;
  readonly open: () => number;
  readonly waiting: () => number;
}

export const makeConnectionBudget = (max: number): ConnectionBudget => {
  let open = 0;
  const waiters: Array<() => void> = [];
  // Insertion order is idle order: the first key has been idle the longest.
  const idle = new Map<symbol, () => void>();

  const permit = (): (() => void) => {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = waiters.shift();
      if (next) next(); // the permit passes straight to the next opener
      else open--;
    };
  };

  return {
    acquire: () => {
      if (open < max) {
        open++;
        return Promise.resolve(permit());
      }
      return new Promise((resolve) => {
        waiters.push(() => resolve(permit()));
        const oldest = idle.entries().next();
        if (!oldest.done) {
          idle.delete(oldest.value[0]);
          oldest.value[1](); // its permit comes back when the socket ends
        }
      });
    },
    idle: (close) => {
      const token = Symbol("idle");
      idle.set(token, close);
      return () => void idle.delete(token);
    },
    open: () => open,
    waiting: () => waiters.length,
  };
};
