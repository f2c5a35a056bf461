// Draining a node: it stops taking mail (the listeners and the API read `isDraining`),
// lets the deliveries in flight finish and be recorded, then hands every queued message
// to live peers (./handoff.ts) until its spool is empty, and then asks the node to stop.
//
// One pass walks the queue a page at a time (memory stays bounded, invariant 5) and hands
// over each message met with all its entries, a few at once. A message whose hand-off
// fails stays here and is tried again on the next pass; with no peer to take mail the
// drain waits and says so, and never drops anything. The drain ends once the spool holds
// no entry and no body is being received: a session that passed MAIL before the drain
// began and commits later is refused at its commit (the listener checks `isDraining`),
// so nothing arrives after the last pass.
import { Clock, Deferred, Effect, type Scope } from "effect";
import type { DrainProgress, DrainState } from "../../protocol/drain.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import type { Spool } from "../queue/spool.ts";
import type { BlobTransport } from "../runtime/blobs.ts";
import { handOff, peerFor, prepareHandOff } from "./handoff.ts";
import type { Log } from "../../protocol/log.ts";

export interface DrainerOptions {
  readonly nodeId: string;
  readonly transport: BlobTransport;
  readonly subjects: Subjects;
  readonly spool: Spool;
  /** Stops the scheduler: no new attempt, those in flight recorded (or interrupted after its grace). */
  readonly stopDeliveries: Effect.Effect<void>;
  /** Peers that take mail now: live, ready and not draining, this node excluded. */
  readonly peers: () => ReadonlyArray<string>;
  /** Hand-offs in progress at once. */
  readonly concurrency: number;
  /** How long one hand-off may take (the body's transfer adds its own allowance). */
  readonly timeoutMs: number;
  /** The wait between passes that left entries behind. */
  readonly retryMs: number;
  /** The node's signal: raised when the drain begins, `finished` completed when the queue is empty. */
  readonly signal: { readonly begin: () => void; readonly finished: Deferred.Deferred<void> };
  readonly hooks: {
    readonly log: Log;
    readonly handedOff: (outcome: "committed" | "duplicate", entries: number) => void;
    readonly failed: () => void;
    /** Progress changed (a message moved, a hand-off failed, the state changed). */
    readonly changed: (progress: DrainProgress) => void;
  };
}

export interface Drainer {
  /** Begins the drain (once; later calls only report) and returns its progress. */
  readonly start: Effect.Effect<DrainProgress>;
  readonly progress: () => DrainProgress;
}

interface Tally {
  state: DrainState;
  startedAt: number | undefined;
  messages: number;
  entries: number;
  duplicates: number;
  failures: number;
  byPeer: Record<string, number>;
  peers: ReadonlyArray<string>;
  problem: string | undefined;
}

/** Builds the drainer; the drain, once started, runs as a fiber of the calling scope. */
export const makeDrainer = (options: DrainerOptions): Effect.Effect<Drainer, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { spool, hooks } = options;
    const scope = yield* Effect.scope;
    const tally: Tally = { state: "idle", startedAt: undefined, messages: 0, entries: 0, duplicates: 0, failures: 0, byPeer: {}, peers: [], problem: undefined };

    const progress = (): DrainProgress => ({
      node: options.nodeId,
      state: tally.state,
      ...(tally.startedAt !== undefined ? { startedAt: tally.startedAt } : {}),
      queued: spool.depth(),
      messagesHandedOff: tally.messages,
      entriesHandedOff: tally.entries,
      duplicates: tally.duplicates,
      failures: tally.failures,
      byPeer: { ...tally.byPeer },
      peers: tally.peers,
      ...(tally.problem !== undefined ? { problem: tally.problem } : {}),
    });

    /** One message to the peer the rendezvous picks among `peers`. */
    const moveOne = (messageId: string, peers: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const prepared = prepareHandOff(spool, options.nodeId, messageId);
        if (prepared._tag === "Gone") return;
        if (prepared._tag === "Missing") {
          hooks.log("drain.body.missing", { level: "warn", queueId: messageId, entries: prepared.entries.length });
          yield* Effect.forEach(prepared.entries, (entry) => spool.finish(entry), { discard: true });
          return;
        }
        const peer = peerFor(messageId, peers)!;
        const moved = yield* handOff(options.transport, options.subjects, spool, prepared, peer, options.timeoutMs);
        tally.messages++;
        tally.entries += moved.entries;
        tally.byPeer[peer] = (tally.byPeer[peer] ?? 0) + 1;
        if (moved.outcome === "duplicate") tally.duplicates++;
        hooks.handedOff(moved.outcome, moved.entries);
        hooks.log("drain.handed-off", { queueId: messageId, peer, entries: moved.entries, ...(moved.outcome === "duplicate" ? { duplicate: true } : {}) });
        hooks.changed(progress());
      }).pipe(
        Effect.catch((error) => failedOne(messageId, `${error._tag}: ${"reason" in error ? error.reason : error.detail}`)),
        // A bug met with one message (odd attributes, a read that threw) fails that message, not the drain.
        Effect.catchDefect((defect) => failedOne(messageId, `defect: ${String(defect)}`)),
      );

    /** A message that stays here this pass (tried again on the next). */
    const failedOne = (messageId: string, detail: string) =>
      Effect.sync(() => {
        tally.failures++;
        tally.problem = `${messageId}: ${detail}`;
        hooks.failed();
        hooks.log("drain.handoff.failed", { level: "warn", queueId: messageId, error: tally.problem });
        hooks.changed(progress());
      });

    /** One walk over the queue; false when no peer could take anything. */
    const pass = Effect.gen(function* () {
      const peers = options.peers();
      tally.peers = peers;
      if (peers.length === 0) {
        if (tally.state !== "waiting") hooks.log("drain.waiting", { level: "warn", queued: spool.depth(), text: "no live, ready peer that is not draining" });
        tally.state = "waiting";
        hooks.changed(progress());
        return false;
      }
      if (tally.state === "waiting") {
        hooks.log("drain.resumed", { peers });
        tally.state = "draining";
        hooks.changed(progress());
      }
      yield* spool.walk({}, (page) => {
        // A message with several entries appears once per entry; those after the first are gone once it moved.
        const ids = [...new Set(page.map((entry) => entry.messageId))];
        return Effect.forEach(ids, (id) => moveOne(id, peers), { concurrency: options.concurrency, discard: true });
      });
      return true;
    });

    const isEmpty = () => spool.depth() === 0 && spool.incomingBodies() === 0;

    const drain = Effect.gen(function* () {
      yield* options.stopDeliveries;
      // A write barrier: an operator's change (a hold, a delete) accepted just before the drain
      // began may still be committing, and the first hand-off must read it. LMDB commits in the
      // order transactions were begun, so once this one is on disk, so is that change; those
      // asked after the drain began are refused (the queue admin checks isDraining).
      yield* Effect.ignore(spool.probe());
      hooks.log("drain.deliveries.stopped", { queued: spool.depth() });
      while (!isEmpty()) {
        const failuresBefore = tally.failures;
        // A pass that met a bug (a walk that threw) is logged and tried again: the drain never dies silently.
        const moved = yield* pass.pipe(
          Effect.catchDefect((defect) =>
            Effect.sync(() => {
              tally.failures++;
              tally.problem = `pass: defect: ${String(defect)}`;
              hooks.log("drain.pass.failed", { level: "error", error: tally.problem });
              hooks.changed(progress());
              return false;
            })),
        );
        if (!isEmpty() && (!moved || tally.failures > failuresBefore)) yield* Effect.sleep(options.retryMs);
        else if (!isEmpty()) yield* Effect.sleep(50); // a body still being received (it will be refused) or an entry that came back
      }
      tally.state = "finished";
      tally.problem = undefined;
      hooks.log("drain.finished", { messages: tally.messages, entries: tally.entries, duplicates: tally.duplicates, failures: tally.failures, byPeer: tally.byPeer });
      hooks.changed(progress());
      yield* Deferred.succeed(options.signal.finished, undefined);
    });

    const start = Effect.suspend(() => {
      if (tally.state !== "idle") return Effect.succeed(progress());
      return Effect.gen(function* () {
        tally.state = "draining";
        options.signal.begin();
        tally.startedAt = yield* Clock.currentTimeMillis;
        hooks.log("drain.started", { queued: spool.depth() });
        yield* Effect.forkIn(drain, scope);
        return progress();
      });
    });

    return { start, progress };
  });
