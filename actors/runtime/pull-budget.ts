// A node's budget for pulling blobs (actors/runtime/blobs.ts). A blob reference makes the
// receiver hold as many bytes as it declares, so without a budget anyone who can send a
// request can make a node hold 256 MB per request, as many at once as they like. The budget
// caps the bytes held for pulls in progress (all peers together and per peer) and how many
// pulls run at once. A pull reserves its declared size before anything is allocated and
// gives it back when the scope holding the reservation closes, however it closes (done,
// failed, interrupted): above a cap the pull is refused at once with RemoteBusy, which
// callers treat as temporary (they defer and retry), never as a reason to bounce.
import { Effect, type Scope } from "effect";
import { RemoteBusy } from "../../protocol/errors.ts";

export interface PullLimits {
  /** Bytes of every pull in progress together. */
  readonly maxBytes: number;
  /** Bytes of the pulls in progress from one peer (the node offering the blobs). */
  readonly maxBytesPerPeer: number;
  /** Pulls in progress at once. */
  readonly maxConcurrent: number;
}

/** Which cap refused a pull. */
export type PullRefusal = "bytes" | "peer-bytes" | "concurrency";

export interface PullUsage {
  readonly bytes: number;
  readonly pulls: number;
}

export interface PullBudget {
  readonly limits: PullLimits;
  /**
   * Holds `bytes` for one pull from `peer` until the scope closes; fails at once with
   * RemoteBusy when that would pass a cap. `subject` names the conversation in the error.
   */
  readonly reserve: (peer: string, bytes: number, subject: string) => Effect.Effect<void, RemoteBusy, Scope.Scope>;
  /** Bytes and pulls reserved now, all peers together. */
  readonly inUse: () => PullUsage;
  /** Bytes and pulls reserved now for one peer. */
  readonly inUseBy: (peer: string) => PullUsage;
}

export const makePullBudget = (
  limits: PullLimits,
  options: {
    /** Every refusal, for metrics. */
    readonly onRefused?: ((reason: PullRefusal, peer: string) => void) | undefined;
  } = {},
): PullBudget => {
  const total = { bytes: 0, pulls: 0 };
  // Only peers with a pull in progress have an entry, so the map cannot grow with peer names.
  const byPeer = new Map<string, { bytes: number; pulls: number }>();

  const refusal = (peer: string, bytes: number): PullRefusal | undefined => {
    if (total.pulls + 1 > limits.maxConcurrent) return "concurrency";
    if (total.bytes + bytes > limits.maxBytes) return "bytes";
    if ((byPeer.get(peer)?.bytes ?? 0) + bytes > limits.maxBytesPerPeer) return "peer-bytes";
    return undefined;
  };

  const describe = (reason: PullRefusal, peer: string, bytes: number): string => {
    switch (reason) {
      case "concurrency":
        return `${total.pulls} blob pulls in progress, the most this node runs at once`;
      case "bytes":
        return `${total.bytes} bytes of blobs being pulled; ${bytes} more would pass this node's cap of ${limits.maxBytes}`;
      case "peer-bytes":
        return `${byPeer.get(peer)?.bytes ?? 0} bytes of blobs being pulled from ${peer}; ${bytes} more would pass the cap of ${limits.maxBytesPerPeer} per peer`;
    }
  };

  const take = (peer: string, bytes: number) => {
    total.bytes += bytes;
    total.pulls += 1;
    const mine = byPeer.get(peer) ?? { bytes: 0, pulls: 0 };
    mine.bytes += bytes;
    mine.pulls += 1;
    byPeer.set(peer, mine);
  };

  const give = (peer: string, bytes: number) => {
    total.bytes -= bytes;
    total.pulls -= 1;
    const mine = byPeer.get(peer);
    if (!mine) return;
    mine.bytes -= bytes;
    mine.pulls -= 1;
    if (mine.pulls === 0) byPeer.delete(peer);
  };

  return {
    limits,
    // acquireRelease: the check and the take happen without interruption between them, and
    // the give is registered with the scope in the same step, so no exit path can skip it.
    reserve: (peer, bytes, subject) =>
      Effect.acquireRelease(
        Effect.suspend(() => {
          const reason = refusal(peer, bytes);
          if (reason === undefined) return Effect.sync(() => take(peer, bytes));
          options.onRefused?.(reason, peer);
          return Effect.fail(new RemoteBusy({ subject, detail: describe(reason, peer, bytes) }));
        }),
        () => Effect.sync(() => give(peer, bytes)),
      ),
    inUse: () => ({ ...total }),
    inUseBy: (peer) => ({ bytes: byPeer.get(peer)?.bytes ?? 0, pulls: byPeer.get(peer)?.pulls ?? 0 }),
  };
};
