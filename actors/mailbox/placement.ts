// Where a mailbox lives, decided from three sources that can disagree:
// - this node's durable record of the mailboxes it holds (holdings.ts): it is where the
//   mail is, so it wins: a mailbox held here is served here whatever the KV says, and
//   the KV is re-asserted (and the disagreement logged);
// - the NATS KV map of owners (cluster/ownership.ts): shared and sticky, but JetStream can
//   lose it and anyone with NATS access can rewrite it;
// - the other nodes' records, asked all at once on `Subjects.mailboxHolders` before this
//   node takes a mailbox the KV does not give to someone else: a holder answers (and
//   re-asserts its claim), and the mail goes to it instead of being split off to a new node.
// When NATS or the KV cannot answer, nothing is claimed: the caller gets
// MailboxUnavailable and defers (never bounces).
//
// A mailbox this node is moving away (actors/mailbox/move.ts: frozen for the target) is
// still held here but served nowhere until the move settles: asks get MailboxUnavailable
// (mail defers, POP3 answers [SYS/TEMP]), and this node re-asserts nothing for it, so the
// KV can name the target once the target committed its copy.
//
// Each node also watches the KV bucket: when JetStream lost it, it is created again
// (cluster/ownership.ts) and every node re-asserts the mailboxes it holds.
import { Clock, Effect, FiberSet, Schedule, Schema, type Scope } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import type { MailboxOwners, OwnershipUnavailable } from "../../cluster/ownership.ts";
import { holdersEndpoint, HoldersReply, MailboxUnavailable, NotOwner } from "../../protocol/mailbox.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { serveEndpoint, servedInScope } from "../runtime/remote.ts";
import type { Holdings } from "./holdings.ts";
import type { Log } from "../../protocol/log.ts";

export interface Placement {
  /**
   * The node that owns the mailbox; undefined when nobody does (and this node may not or
   * need not claim it). With `claimIfFree`, a mailbox nobody holds is claimed for this node.
   */
  readonly ownerFor: (user: string, claimIfFree: boolean) => Effect.Effect<string | undefined, MailboxUnavailable>;
  /** Succeeds when this node holds the mailbox (or may take it); NotOwner otherwise. */
  readonly servesHere: (user: string) => Effect.Effect<void, NotOwner | MailboxUnavailable>;
  /** Claims a mailbox configured to live on this node; returns its owner (another node when the claim was refused). */
  readonly claimHome: (user: string) => Effect.Effect<string, MailboxUnavailable>;
  /** A node other than `unreachable` that holds the mailbox, if any answers. */
  readonly holderOtherThan: (user: string, unreachable: string) => Effect.Effect<string | undefined, MailboxUnavailable>;
  /** Answers holders queries and watches the KV bucket, for as long as the scope is open. */
  readonly serve: () => Effect.Effect<void, never, Scope.Scope>;
}

export interface PlacementOptions {
  readonly nodeId: string;
  readonly nc: NatsConnection;
  readonly subjects: Subjects;
  readonly owners: MailboxOwners;
  readonly holdings: Holdings;
  /** The node a user's mailbox is configured to live on, if the config says. */
  readonly homeOf: (user: string) => string | undefined;
  /** The node a mailbox held here is being moved to (frozen here until the move settles). */
  readonly movingTo?: (user: string) => string | undefined;
  readonly log: Log;
  /** A holders query ends this long after the last answer (default 250 ms)… */
  readonly holdersQuietMs?: number;
  /** …or after this long in all (default 2 s). */
  readonly holdersTimeoutMs?: number;
  /** How often the KV bucket is checked (default 3 s). */
  readonly bucketCheckMs?: number;
}

const REASSERT_CONCURRENCY = 8;

export const makePlacement = (options: PlacementOptions): Placement => {
  const { nodeId, nc, subjects, owners, holdings, log } = options;
  const movingTo = options.movingTo ?? (() => undefined);
  const quietMs = options.holdersQuietMs ?? 250;
  const timeoutMs = options.holdersTimeoutMs ?? 2_000;

  const unavailable = (user: string, detail: string) => new MailboxUnavailable({ user, detail });
  const fromKv = (error: OwnershipUnavailable) => unavailable(error.user, `ownership: ${error.detail}`);

  const record = (user: string) =>
    Clock.currentTimeMillis.pipe(
      Effect.flatMap((now) => holdings.record(user, now)),
      Effect.mapError((error) => unavailable(user, `cannot record the mailbox as held: ${error.detail}`)),
    );

  /** Makes the KV name this node for a mailbox it holds; a KV that named another node is logged. */
  const reassert = (user: string, why: string) =>
    owners.assert(user, nodeId).pipe(
      Effect.tap((previous) =>
        Effect.sync(() => (previous !== undefined && previous !== nodeId ? log("mailbox.owner.reasserted", { user, kvOwner: previous, reason: why }) : undefined))),
    );

  /** Background work of `serve`'s scope; until serve runs, that work runs inline. */
  let background: FiberSet.FiberSet<unknown, unknown> | undefined;
  const inBackground = (effect: Effect.Effect<unknown>) => (background ? Effect.asVoid(FiberSet.run(background, effect)) : effect);

  /** Held mailboxes whose KV entry is being compared now: one comparison per mailbox at a time. */
  const comparing = new Set<string>();

  /**
   * A mailbox held here is served here: the record wins over a KV that names another
   * node, and local mail never waits for NATS. The KV is compared (and put right) in the
   * background, and not at all while the bucket is known to be unusable.
   */
  const heldHere = (user: string) =>
    Effect.suspend(() => {
      if (owners.problem() !== undefined || comparing.has(user)) return Effect.succeed(nodeId);
      comparing.add(user);
      const compare = owners.ownerOf(user).pipe(
        Effect.flatMap((owner) => (owner === nodeId ? Effect.void : Effect.asVoid(reassert(user, "held here")))),
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => comparing.delete(user))),
      );
      return inBackground(compare).pipe(Effect.as(nodeId));
    });

  // -- asking every node which holds a mailbox ---------------------------------

  const askHolders = (user: string): Effect.Effect<ReadonlyArray<string>, MailboxUnavailable> =>
    Effect.tryPromise({
      try: async () => {
        const payload = encodeFrame(Schema.encodeSync(holdersEndpoint.request)({ user }));
        const replies = await nc.requestMany(subjects.mailboxHolders, payload, { strategy: "stall", stall: quietMs, maxWait: timeoutMs });
        const answers: Array<HoldersReply> = [];
        for await (const msg of replies) {
          const answer = decodeHoldersAnswer(msg.data);
          if (answer) answers.push(answer);
        }
        return answers;
      },
      catch: (error) => unavailable(user, `holders query failed: ${error instanceof Error ? error.message : String(error)}`),
    }).pipe(
      Effect.flatMap((answers) =>
        // This node answers too: without its own answer, the query did not reach every node.
        answers.some((answer) => answer.node === nodeId)
          ? Effect.succeed([...new Set(answers.filter((a) => a.holds && a.node !== nodeId).map((a) => a.node))].sort())
          : Effect.fail(unavailable(user, "holders query went unanswered, even by this node"))),
    );

  /** The holder to route to, when another node holds the mailbox. */
  const otherHolder = (user: string) =>
    askHolders(user).pipe(
      Effect.tap((holders) => Effect.sync(() => (holders.length > 1 ? log("mailbox.holders.split", { level: "warn", user, holders }) : undefined))),
      Effect.map((holders) => holders[0]),
    );

  /**
   * Answers at once and re-asserts the KV afterwards: the asker stops listening soon after
   * the first answers, and a holder that answered late would see its mailbox claimed elsewhere.
   */
  const answerHolders = (user: string): Effect.Effect<{ value: HoldersReply }> =>
    movingTo(user) !== undefined
      ? Effect.succeed({ value: { node: nodeId, holds: true } })
      : holdings.holds(user)
      ? inBackground(reassert(user, "holders query").pipe(Effect.ignore)).pipe(Effect.as({ value: { node: nodeId, holds: true } }))
      : Effect.succeed({ value: { node: nodeId, holds: false } });

  // -- deciding -----------------------------------------------------------------

  /** A mailbox moving away: nobody serves it until the move settles. */
  const moving = (user: string) => {
    const target = movingTo(user);
    return target === undefined ? undefined : unavailable(user, `mailbox is moving to node ${target}`);
  };

  const ownerFor = (user: string, claimIfFree: boolean): Effect.Effect<string | undefined, MailboxUnavailable> =>
    Effect.gen(function* () {
      const movingAway = moving(user);
      if (movingAway) return yield* movingAway;
      if (holdings.holds(user)) return yield* heldHere(user);
      const kvOwner = yield* Effect.mapError(owners.ownerOf(user), fromKv);
      if (kvOwner !== undefined && kvOwner !== nodeId) return kvOwner;
      // The KV names nobody, or names this node without this node's record (a claim cut
      // short by a crash, or a forged entry): does any other node hold the mail?
      const holder = yield* otherHolder(user);
      if (holder !== undefined) return holder;
      if (kvOwner === nodeId) {
        yield* record(user);
        return nodeId;
      }
      if (!claimIfFree) return undefined;
      const home = options.homeOf(user);
      // A mailbox configured to live elsewhere waits for its home node to claim it.
      if (home !== undefined && home !== nodeId) return undefined;
      const owner = yield* Effect.mapError(owners.claim(user, nodeId), fromKv);
      if (owner === nodeId) yield* record(user);
      return owner;
    });

  const servesHere = (user: string): Effect.Effect<void, NotOwner | MailboxUnavailable> =>
    moving(user) !== undefined
      ? Effect.fail(moving(user)!)
      : holdings.holds(user)
      ? Effect.void
      : Effect.flatMap(ownerFor(user, false), (owner) => (owner === nodeId ? Effect.void : Effect.fail(new NotOwner({ user, node: nodeId }))));

  /** Like any claim, a home claim first asks whether another node holds the mail (the KV may have been lost). */
  const claimHome = (user: string): Effect.Effect<string, MailboxUnavailable> =>
    movingTo(user) !== undefined
      ? Effect.succeed(nodeId) // held here, frozen: the move decides, nothing is re-asserted
      : holdings.holds(user)
      ? Effect.mapError(reassert(user, "home"), fromKv).pipe(Effect.as(nodeId))
      : ownerFor(user, true).pipe(
          Effect.flatMap((owner) => (owner === undefined ? Effect.fail(unavailable(user, "home mailbox could not be claimed")) : Effect.succeed(owner))),
        );

  /**
   * Another node than `unreachable` that holds the mailbox: asked when the node the KV
   * names does not serve it (a forged or stale entry, even naming a node that does not
   * exist). A holder that answers also puts the KV right.
   */
  const holderOtherThan = (user: string, unreachable: string) =>
    otherHolder(user).pipe(Effect.map((holder) => (holder !== unreachable ? holder : undefined)));

  // -- watching the bucket ------------------------------------------------------

  /** The bucket generation this node last re-asserted all its mailboxes into. */
  let reassertedInto: string | undefined;

  const reassertAll = (generation: string) =>
    Effect.gen(function* () {
      const users = holdings.users().filter((user) => movingTo(user) === undefined);
      const failed = yield* Effect.forEach(users, (user) => reassert(user, "bucket recreated").pipe(Effect.as(0), Effect.orElseSucceed(() => 1)), {
        concurrency: REASSERT_CONCURRENCY,
      }).pipe(Effect.map((results) => results.reduce((sum: number, n) => sum + n, 0)));
      // Some failed (NATS went away again): the next check tries them all again.
      if (failed === 0) reassertedInto = generation;
      log("mailbox.owners.reasserted", { generation, mailboxes: users.length, failed });
    });

  const watchBucket = owners.checkBucket().pipe(
    Effect.flatMap((state) => {
      if (state._tag === "Unreachable") return Effect.void;
      if (state._tag === "Recreated") log("mailbox.owners.bucket.recreated", { generation: state.generation });
      return state.generation === reassertedInto ? Effect.void : reassertAll(state.generation);
    }),
  );

  const serve = () =>
    Effect.gen(function* () {
      background = yield* FiberSet.make();
      yield* servedInScope((run) =>
        serveEndpoint(nc, subjects.mailboxHolders, holdersEndpoint, (request) => answerHolders(request.user), { run }));
      yield* watchBucket.pipe(Effect.repeat(Schedule.spaced(options.bucketCheckMs ?? 3_000)), Effect.forkScoped);
    });

  return { ownerFor, servesHere, claimHome, holderOtherThan, serve };
};

/** One node's answer to a holders query; anything malformed is ignored (it cannot make us claim). */
const decodeHoldersAnswer = (data: Uint8Array): HoldersReply | undefined => {
  const frame = decodeFrame(data);
  if (typeof frame === "string") return undefined;
  const reply = frame.json as { ok?: unknown; value?: unknown } | null;
  if (typeof reply !== "object" || reply === null || reply.ok !== true) return undefined;
  const decoded = Schema.decodeUnknownExit(HoldersReply)(reply.value);
  return decoded._tag === "Success" ? decoded.value : undefined;
};
