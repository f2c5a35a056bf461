// Moving a mailbox to another node while mail keeps arriving (`tern mailbox move USER NODE`).
// The target node runs the move; the source is the node that holds the mailbox now.
//
//  1. target: writes `mbox.moves.in[user] = {from: source, copying}`.
//  2. target: pre-copy: asks the source for the mailbox's records (snapshot, no freeze) and
//     stages them with their bodies, pulled by hash in bounded batches, as rows nobody
//     serves (no `mbox.users`, no held mark). The source keeps taking mail meanwhile.
//  3. target → source `snapshot` with `freezeFor`: the source refuses new asks for the
//     mailbox (deliveries defer with a temporary error, POP3 answers [SYS/TEMP]), lets the
//     asks it took finish, writes `mbox.moves.out[user] = {to: target}` (a transaction after
//     every write it made: LMDB commits in order, so they are all on disk), and answers
//     the final snapshot. From here the source serves the mailbox to nobody until told.
//  4. target: stages the delta (bodies that arrived since 2), then in ONE transaction makes
//     its copy exactly the final snapshot (folders with their UIDVALIDITY and UIDNEXT, so
//     UIDs and POP3 UIDLs stay the same; flags; the queue entries stored, so a redelivery
//     after a lost ack is still a duplicate), marks the mailbox held and sets the record to
//     `committed`. THE COMMIT POINT: from here the target is the owner.
//  5. target: makes the ownership KV name itself (mail now goes to it).
//  6. target → source `finish`: the source removes its copy, its held mark and its
//     `moves.out` record in one transaction.
//  7. target: removes `moves.in`; answers the operator.
// A failure before 4 aborts: target → source `abort` (the source drops `moves.out` and
// serves again), then the target removes what it staged and `moves.in` in one transaction.
//
// Exactly one owner, no message lost or doubled, whatever is killed (kill -9) when:
// - target before 4 (record `copying`): at restart the target aborts (asking the source
//   until it answers), then rolls its staging back. The source, frozen or not, still has
//   every message; while frozen, mail waits in the senders' queues.
// - source after 3 (record `moves.out`): it restarts frozen (the record is read before the
//   node serves anything) and asks the target where the move is: `committed` → remove its
//   copy (the target has all of it: nothing was written after the freeze); `none` (the
//   target aborted or never got that far) → serve again; `copying` or no answer → wait.
//   The target, for its part, finishes or aborts it when it next reaches the source.
// - target after 4 (record `committed`): at restart it re-asserts the KV and tells the
//   source to finish, until the source answers; meanwhile the source stays frozen (its
//   record), so the mailbox is served by the target alone. Both hold the data only while
//   the source is frozen, and the source's holders answer then re-asserts nothing.
// - source during 6: its removal is one transaction, so it is done or not; `finish` again
//   is answered "done" when the mailbox is gone.
// A message the source took in the freeze's last moments but whose ask was cut short got
// no answer: its sender retries, and the target stores it once (its queue-entry id is in
// the copied deliveries if the source had committed it).
//
// Two moves of one mailbox never overlap: the target refuses a second while its record
// exists, the source refuses to freeze for another target while frozen. The source's
// move steps run one at a time, so a recovery check never interleaves with a freeze.
import { Clock, Duration, Effect, Schedule, Semaphore, type Scope } from "effect";
import type { MailboxOwners } from "../../cluster/ownership.ts";
import {
  bodiesEndpoint,
  moveEndpoint,
  MoveFailed,
  moveStatusEndpoint,
  settleEndpoint,
  snapshotEndpoint,
  type MailboxSnapshot,
  type MoveFailureCode,
  type MoveReply,
  type MovedMessage,
  type MoveStep,
} from "../../protocol/mailbox-move.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import type { BlobTransport } from "../runtime/blobs.ts";
import { callChunkedEndpoint, serveChunkedEndpoint, serveEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";
import type { LocalMailboxes } from "./actor.ts";
import type { MoveCrashPoint } from "./faults.ts";
import type { Holdings } from "./holdings.ts";
import type { MoveRecords } from "./move-records.ts";
import type { Placement } from "./placement.ts";
import type { MailboxStore } from "./store.ts";
import type { Log } from "../../protocol/log.ts";

export interface MailboxMoves {
  /** The node a mailbox held here is being moved to, while it is frozen here. */
  readonly movingTo: (user: string) => string | undefined;
  /** Freezes again the mailboxes this node was moving away when it stopped: before serving anything. */
  readonly restore: () => Effect.Effect<void>;
  /** Serves the move steps and the operator's requests, and settles moves left half done, while the scope is open. */
  readonly serve: () => Effect.Effect<void, never, Scope.Scope>;
}

export interface MailboxMovesOptions {
  readonly nodeId: string;
  readonly transport: BlobTransport;
  readonly subjects: Subjects;
  readonly store: MailboxStore;
  readonly records: MoveRecords;
  readonly holdings: Holdings;
  readonly owners: MailboxOwners;
  /** Built with `movingTo: (user) => records.outgoing(user)?.to`, like this module's `movingTo`. */
  readonly placement: Placement;
  readonly local: LocalMailboxes;
  /** The user's mailbox address, if they are a local user. */
  readonly accountOf: (user: string) => string | undefined;
  readonly log: Log;
  /** One node-to-node step's timeout (a snapshot of a big mailbox may take a while). */
  readonly stepTimeoutMs: number;
  /** How long the source waits for asks it took before freezing. */
  readonly freezeGraceMs: number;
  /** Fault injection for crash tests (faults.ts). */
  readonly crashAt?: (point: MoveCrashPoint) => void;
  /** How often moves left half done (a node was down) are settled. Default 5 s. */
  readonly recoverEveryMs?: number;
}

/** Bodies pulled per request: bounded memory on both sides, well under the pull budget per peer. */
const BATCH_BYTES = 16 * 1024 * 1024;
const BATCH_MESSAGES = 500;

const failed = (user: string, code: MoveFailureCode, detail: string) => new MoveFailed({ user, code, detail });

export const makeMailboxMoves = (options: MailboxMovesOptions): MailboxMoves => {
  const { nodeId, transport, subjects, store, records, holdings, owners, local, log } = options;
  /** Mailboxes this node is moving in now (their `moves.in` records are not the recovery's). */
  const active = new Set<string>();
  /** The source side's steps, one at a time. */
  const sourceSteps = Semaphore.makeUnsafe(1);
  const crashAt = (point: MoveCrashPoint) => Effect.sync(() => options.crashAt?.(point));

  const frozenDetail = (to: string) => `mailbox is moving to node ${to}`;

  // -- calling the other node ---------------------------------------------------

  const call = <Req, Res>(node: string, step: MoveStep, endpoint: Endpoint<Req, Res, MoveFailed>, request: Req & { user: string }) =>
    callChunkedEndpoint(transport, subjects.mailboxMove(node, step), endpoint, request, { timeoutMs: options.stepTimeoutMs }).pipe(
      Effect.mapError((error) =>
        error._tag === "MoveFailed" ? error : failed(request.user, "unavailable", `node ${node} (${step}): ${error._tag}: ${error.detail}`)),
    );

  /** A step that may meet a busy or briefly unreachable peer: a few tries. */
  const patiently = <A>(effect: Effect.Effect<A, MoveFailed>) =>
    effect.pipe(Effect.retry({ schedule: Schedule.spaced(Duration.millis(500)), times: 3, while: (error) => error.code === "unavailable" }));

  // -- source side ----------------------------------------------------------------

  const snapshot = (request: { user: string; freezeFor?: string | undefined }) =>
    sourceSteps.withPermits(1)(
      Effect.gen(function* () {
        const { user, freezeFor } = request;
        if (!holdings.holds(user)) return yield* failed(user, "not-holder", `node ${nodeId} does not hold the mailbox`);
        const out = records.outgoing(user);
        if (out !== undefined && out.to !== freezeFor) return yield* failed(user, "moving", `the mailbox is moving to node ${out.to}`);
        if (freezeFor !== undefined && out === undefined) {
          yield* local.freeze(user, frozenDetail(freezeFor), options.freezeGraceMs);
          const since = yield* Clock.currentTimeMillis;
          // After every write the mailbox took (LMDB commits in order): the snapshot below has them all.
          yield* records.putOutgoing(user, { to: freezeFor, since }).pipe(
            Effect.tapError(() => Effect.sync(() => local.thaw(user))),
            Effect.mapError((error) => failed(user, "failed", `cannot record the freeze: ${error.detail}`)),
          );
          log("mailbox.move.frozen", { user, peer: freezeFor });
          yield* crashAt("source-frozen");
        }
        return { value: store.snapshot(user) };
      }),
    );

  const bodies = (request: { user: string; hashes: ReadonlyArray<string> }) =>
    Effect.sync(() => {
      const found = request.hashes.map((hash) => store.bodyByHash(hash));
      const sizes = found.map((body) => (body === undefined ? -1 : body.length));
      return { value: { sizes }, attachment: Buffer.concat(found.flatMap((body) => (body ? [body] : []))) };
    });

  /** The target committed: drop this node's copy (idempotent). */
  const finishHere = (user: string, to: string) =>
    Effect.gen(function* () {
      const out = records.outgoing(user);
      if (out === undefined) {
        if (!holdings.holds(user)) return;
        return yield* failed(user, "not-holder", `node ${nodeId} holds the mailbox and was not moving it to ${to}`);
      }
      if (out.to !== to) return yield* failed(user, "moving", `the mailbox is moving to node ${out.to}`);
      yield* store.remove(user, () => records.removeOutgoingNow(user)).pipe(Effect.mapError((error) => failed(user, "failed", error.detail)));
      local.thaw(user);
      log("mailbox.move.released", { user, peer: to });
    });

  /** The target gave up: serve the mailbox again (idempotent). */
  const abortHere = (user: string, to: string) =>
    Effect.gen(function* () {
      const out = records.outgoing(user);
      if (out !== undefined && out.to !== to) return;
      if (out !== undefined) yield* records.removeOutgoing(user).pipe(Effect.mapError((error) => failed(user, "failed", error.detail)));
      local.thaw(user);
      if (out !== undefined) log("mailbox.move.thawed", { user, peer: to });
    });

  const settle = (step: "finish" | "abort") => (request: { user: string; to: string }) =>
    sourceSteps.withPermits(1)(step === "finish" ? finishHere(request.user, request.to) : abortHere(request.user, request.to)).pipe(Effect.as({ value: {} }));

  // -- target side ------------------------------------------------------------------

  const status = (request: { user: string; from: string }) =>
    Effect.sync(() => {
      const record = records.incoming(request.user);
      const state = record !== undefined && record.from === request.from ? record.state : holdings.holds(request.user) ? "committed" : "none";
      return { value: { state } as const };
    });

  /** Splits `messages` into batches whose bodies not stored here yet stay under the caps. */
  const batchesOf = (messages: ReadonlyArray<MovedMessage>): Array<Array<MovedMessage>> => {
    const batches: Array<Array<MovedMessage>> = [];
    let batch: Array<MovedMessage> = [];
    let bytes = 0;
    const wanted = new Set<string>();
    for (const message of messages) {
      const fetch = !store.hasBody(message.body) && !wanted.has(message.body);
      if (batch.length > 0 && (batch.length >= BATCH_MESSAGES || (fetch && bytes + message.size > BATCH_BYTES))) {
        batches.push(batch);
        [batch, bytes] = [[], 0];
      }
      batch.push(message);
      if (fetch) {
        wanted.add(message.body);
        bytes += message.size;
      }
    }
    if (batch.length > 0) batches.push(batch);
    return batches;
  };

  /** Stages `messages`, pulling the bodies not stored here. A body the source no longer has (expunged since) is skipped. */
  const stageFrom = (source: string, user: string, messages: ReadonlyArray<MovedMessage>) =>
    Effect.forEach(batchesOf(messages), (batch) =>
      Effect.gen(function* () {
        const hashes = [...new Set(batch.filter((m) => !store.hasBody(m.body)).map((m) => m.body))];
        const pulled = new Map<string, Uint8Array>();
        if (hashes.length > 0) {
          const reply = yield* patiently(call(source, "bodies", bodiesEndpoint, { user, hashes }));
          const all = reply.attachment ?? new Uint8Array();
          let offset = 0;
          reply.value.sizes.forEach((size, n) => {
            if (size < 0) return;
            pulled.set(hashes[n]!, all.subarray(offset, offset + size));
            offset += size;
          });
        }
        const present = batch.filter((m) => store.hasBody(m.body) || pulled.has(m.body));
        yield* store.stage(user, present, pulled).pipe(Effect.mapError((error) => failed(user, "failed", `staging: ${error.detail}`)));
      }), { discard: true });

  /** Gives the move up: the source serves again, then the staging goes. Fails (the record stays, recovery retries) when the source cannot be told. */
  const rollback = (user: string, from: string) =>
    Effect.gen(function* () {
      // Never once this node holds the mailbox (a commit): the source must not serve it again, nor the mailbox go.
      if (holdings.holds(user) || records.incoming(user)?.state === "committed") {
        log("mailbox.move.rollback.refused", { level: "warn", user, peer: from, text: "this node holds the mailbox" });
        return;
      }
      yield* patiently(call(from, "abort", settleEndpoint, { user, to: nodeId }));
      yield* store.remove(user, () => records.removeIncomingNow(user)).pipe(Effect.mapError((error) => failed(user, "failed", error.detail)));
      log("mailbox.move.rolled-back", { user, peer: from });
    });

  /** After the commit: the KV names this node, the source drops its copy, the record goes. */
  const complete = (user: string, from: string) =>
    Effect.gen(function* () {
      yield* owners.assert(user, nodeId).pipe(Effect.mapError((error) => failed(user, "unavailable", `ownership: ${error.detail}`)));
      yield* patiently(call(from, "finish", settleEndpoint, { user, to: nodeId }));
      yield* records.removeIncoming(user).pipe(Effect.mapError((error) => failed(user, "failed", error.detail)));
      log("mailbox.move.completed", { user, peer: from });
    });

  const copyFrom = (user: string, from: string) =>
    Effect.gen(function* () {
      const first = yield* patiently(call(from, "snapshot", snapshotEndpoint, { user }));
      yield* stageFrom(from, user, first.value.messages);
      const frozenAt = yield* Clock.currentTimeMillis;
      const last: MailboxSnapshot = (yield* call(from, "snapshot", snapshotEndpoint, { user, freezeFor: nodeId })).value;
      yield* crashAt("target-frozen");
      yield* stageFrom(from, user, last.messages);
      const since = yield* Clock.currentTimeMillis;
      yield* store.replace(last, new Map(), () => records.putIncomingNow(user, { from, state: "committed", since })).pipe(
        Effect.mapError((error) => failed(user, "failed", `commit: ${error.detail}`)),
      );
      const frozenMs = (yield* Clock.currentTimeMillis) - frozenAt;
      log("mailbox.move.committed", { user, peer: from, messages: last.messages.length, frozenMs });
      yield* crashAt("target-committed");
      return { snapshot: last, frozenMs };
    });

  const moveIn = (request: { user: string }): Effect.Effect<{ value: MoveReply }, MoveFailed> =>
    Effect.gen(function* () {
      const user = options.accountOf(request.user);
      if (user === undefined) return yield* failed(request.user, "unknown-user", `${request.user} is not a local user`);
      if (active.has(user) || records.incoming(user) !== undefined) return yield* failed(user, "moving", `a move of the mailbox to node ${nodeId} is under way`);
      // Taken before the first wait: a second request for the same user is refused above, not run beside this one.
      active.add(user);
      return yield* moveUnderway(user).pipe(Effect.ensuring(Effect.sync(() => active.delete(user))));
    });

  const moveUnderway = (user: string): Effect.Effect<{ value: MoveReply }, MoveFailed> =>
    Effect.gen(function* () {
      if (holdings.holds(user)) return yield* failed(user, "already-there", `node ${nodeId} already holds the mailbox`);
      const owner = yield* options.placement.ownerFor(user, false).pipe(Effect.mapError((error) => failed(user, "unavailable", error.detail)));
      if (owner === nodeId) return yield* failed(user, "already-there", `node ${nodeId} already holds the mailbox`);
      if (owner === undefined) {
        // Nobody holds it: it has never had mail. Taking it here is the whole move.
        const taken = yield* owners.claim(user, nodeId).pipe(Effect.mapError((error) => failed(user, "unavailable", `ownership: ${error.detail}`)));
        if (taken !== nodeId) return yield* failed(user, "unavailable", `node ${taken} claimed the mailbox meanwhile; try again`);
        yield* holdings.record(user, yield* Clock.currentTimeMillis).pipe(Effect.mapError((error) => failed(user, "failed", error.detail)));
        return { value: { user, from: "", to: nodeId, folders: 0, messages: 0, bytes: 0, frozenMs: 0 } };
      }
      return yield* Effect.gen(function* () {
        yield* records.putIncoming(user, { from: owner, state: "copying", since: yield* Clock.currentTimeMillis }).pipe(
          Effect.mapError((error) => failed(user, "failed", error.detail)),
        );
        log("mailbox.move.started", { user, peer: owner });
        const copied = yield* copyFrom(user, owner).pipe(
          Effect.tapError((error) =>
            Effect.sync(() => log("mailbox.move.failed", { level: "warn", user, peer: owner, reason: error.code, error: error.detail })).pipe(
              Effect.andThen(rollback(user, owner).pipe(Effect.catch((again) => Effect.sync(() => log("mailbox.move.rollback.pending", { level: "warn", user, error: again.detail }))))),
            )),
        );
        // Committed: whatever fails from here, the mailbox is this node's; the recovery finishes the rest.
        yield* complete(user, owner).pipe(Effect.catch((error) => Effect.sync(() => log("mailbox.move.completion.pending", { level: "warn", user, error: error.detail }))));
        const { snapshot: moved, frozenMs } = copied;
        return {
          value: {
            user,
            from: owner,
            to: nodeId,
            folders: moved.folders.length,
            messages: moved.messages.length,
            bytes: moved.messages.reduce((sum, m) => sum + m.size, 0),
            frozenMs,
          },
        };
      });
    });

  // -- settling moves left half done ------------------------------------------------

  const recoverIncoming = () => Effect.forEach(records.allIncoming(), ([user, record]) => {
    if (active.has(user)) return Effect.void;
    const settleOne = record.state === "copying" ? rollback(user, record.from) : complete(user, record.from);
    return settleOne.pipe(Effect.catch((error) => Effect.sync(() => log("mailbox.move.recovery.pending", { level: "warn", user, direction: "in", peer: record.from, state: record.state, error: error.detail }))));
  }, { discard: true });

  const recoverOutgoing = () => Effect.forEach(records.allOutgoing(), ([user, record]) =>
    call(record.to, "status", moveStatusEndpoint, { user, from: nodeId }).pipe(
      Effect.flatMap(({ value }) =>
        value.state === "committed"
          ? sourceSteps.withPermits(1)(finishHere(user, record.to))
          : value.state === "none"
            ? sourceSteps.withPermits(1)(abortHere(user, record.to))
            : Effect.void),
      Effect.catch((error) => Effect.sync(() => log("mailbox.move.recovery.pending", { level: "warn", user, direction: "out", peer: record.to, error: error.detail }))),
    ), { discard: true });

  const recover = Effect.suspend(() => Effect.andThen(recoverIncoming(), recoverOutgoing()));

  const serve = () =>
    Effect.gen(function* () {
      const chunked = <Req, Res>(step: MoveStep, endpoint: Endpoint<Req, Res, MoveFailed>, handle: (request: Req) => Effect.Effect<{ value: Res; attachment?: Uint8Array }, MoveFailed>) =>
        servedInScope((run) =>
          serveChunkedEndpoint(transport, subjects.mailboxMove(nodeId, step), endpoint, (request) => handle(request), { timeoutMs: options.stepTimeoutMs, run }));
      yield* chunked("snapshot", snapshotEndpoint, snapshot);
      yield* chunked("bodies", bodiesEndpoint, bodies);
      yield* chunked("finish", settleEndpoint, settle("finish"));
      yield* chunked("abort", settleEndpoint, settle("abort"));
      yield* chunked("status", moveStatusEndpoint, status);
      yield* servedInScope((run) => serveEndpoint(transport.nc, subjects.mailboxMoveAdmin(nodeId), moveEndpoint, moveIn, { run }));
      yield* recover.pipe(Effect.repeat(Schedule.spaced(Duration.millis(options.recoverEveryMs ?? 5_000))), Effect.forkScoped);
    });

  return {
    movingTo: (user) => records.outgoing(user)?.to,
    restore: () =>
      Effect.forEach(records.allOutgoing(), ([user, record]) => local.freeze(user, frozenDetail(record.to), 0), { discard: true }),
    serve,
  };
};
