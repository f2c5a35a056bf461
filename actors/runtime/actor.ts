// The actor runtime: a named actor with a bounded mailbox, `tell` and `ask`,
// and a supervised handler.
//
// The mailbox lives outside the part that restarts. Each life of a handler (an
// incarnation) is built by `init` inside its own Scope: whatever it acquires there
// (connections, timer fibers) is released when it crashes and when the actor stops.
// When a handler dies (a defect: a throw or Effect.die), the message that killed it
// is answered with ActorCrashed, the incarnation's scope closes, and a new one is
// built after the delay `restartSchedule` gives (exponential, capped, jittered);
// queued messages wait for it.
//
// The restart schedule is also the restart budget: `maxRestarts` restarts inside a
// sliding `windowMs`. Spending it escalates: the actor refuses work with
// ActorEscalated (callers fail fast instead of queueing behind a broken handler), the
// supervisor marks the node not-ready, and the actor is rebuilt on the slower
// `rebuildSchedule`. When a rebuilt incarnation is up again the escalation clears.
//
// Layout: `spawnActor` builds one mutable record per actor (ActorState) and hands it to
// module-level functions: the ref's operations (enqueue, ask, stop), the per-message hot
// path (handleOne), and supervision from the inside out (incarnation, worker, generation,
// escalate, supervise).
import { Cause, Clock, Deferred, Duration, Effect, Exit, Pull, Queue, Schedule, Scope } from "effect";
import { ActorCrashed, ActorEscalated, ActorStopped, AskTimeout, MailboxFull } from "../../protocol/errors.ts";
import type { Supervisor } from "./supervisor.ts";

export interface RestartPolicy {
  /** First restart delay; doubles with every restart still inside the window. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Restarts allowed inside `windowMs`; one more escalates. */
  readonly maxRestarts: number;
  readonly windowMs: number;
  /** After escalating: the first rebuild delay, doubling while rebuilt actors escalate again within `windowMs`. */
  readonly rebuildBaseDelayMs: number;
  readonly rebuildMaxDelayMs: number;
}

export const defaultRestartPolicy: RestartPolicy = {
  baseDelayMs: 50,
  maxDelayMs: 5_000,
  maxRestarts: 10,
  windowMs: 60_000,
  rebuildBaseDelayMs: 30_000,
  rebuildMaxDelayMs: 300_000,
};

export type Handler<M, R, E> = (message: M) => Effect.Effect<R, E>;

export interface ActorSpec<M, R, E> {
  readonly name: string;
  /** Mailbox bound; a full mailbox makes tell/ask fail with MailboxFull. */
  readonly capacity: number;
  /** Messages handled at once (default 1: strictly one after another). Each worker has its own incarnation. */
  readonly concurrency?: number;
  readonly restart?: RestartPolicy;
  /**
   * Builds the handler. Runs again after every crash, so state is rebuilt fresh. What it
   * acquires in the Scope belongs to this incarnation and is released when it ends.
   */
  readonly init: Effect.Effect<Handler<M, R, E>, never, Scope.Scope>;
}

export type AskError = MailboxFull | AskTimeout | ActorCrashed | ActorStopped | ActorEscalated;

export interface ActorRef<M, R, E> {
  readonly name: string;
  readonly tell: (message: M) => Effect.Effect<void, MailboxFull | ActorStopped | ActorEscalated>;
  readonly ask: (message: M, timeoutMs: number) => Effect.Effect<R, E | AskError>;
  /** Messages waiting plus messages being handled. */
  readonly load: () => number;
  /** Refuses new messages, lets queued and in-flight ones finish (up to `graceMs`), then stops and releases every incarnation. */
  readonly stop: (graceMs: number) => Effect.Effect<void>;
}

/** Restart delays with the budget built in: stops (escalate) when `maxRestarts` restarts are already inside the window. */
export const restartSchedule = (policy: RestartPolicy): Schedule.Schedule<number> =>
  Schedule.fromStep(
    Effect.sync(() => {
      let recent: number[] = [];
      return (now: number, _crash: unknown) => {
        recent = recent.filter((t) => now - t < policy.windowMs);
        if (recent.length >= policy.maxRestarts) return Cause.done(recent.length);
        // The delay grows with the restarts still in the window, so a quiet window starts over from the base.
        const delay = Duration.millis(policy.baseDelayMs * 2 ** Math.min(recent.length, 30));
        recent.push(now);
        return Effect.succeed([recent.length, delay] as [number, Duration.Duration]);
      };
    }),
  ).pipe(Schedule.jittered, capped(policy.maxDelayMs));

/** Rebuild delays after escalations: exponential from `rebuildBaseDelayMs`, capped, jittered; never gives up. */
export const rebuildSchedule = (policy: RestartPolicy): Schedule.Schedule<Duration.Duration> =>
  Schedule.exponential(policy.rebuildBaseDelayMs).pipe(Schedule.jittered, capped(policy.rebuildMaxDelayMs));

/** Caps a schedule's delays; applied after jitter so the cap holds. */
function capped(maxMs: number) {
  return <O, I, E, R>(self: Schedule.Schedule<O, I, E, R>) =>
    Schedule.modifyDelay(self, ({ duration }) => Effect.succeed(Duration.min(duration, Duration.millis(maxMs))));
}

interface Envelope<M, R, E> {
  readonly message: M;
  readonly reply: Deferred.Deferred<R, E | ActorCrashed | ActorStopped | ActorEscalated> | undefined;
}

type Phase =
  | { readonly _tag: "serving" }
  /** Refuses new messages; queued ones are still handled during the grace period. */
  | { readonly _tag: "stopping" }
  | { readonly _tag: "stopped" }
  | { readonly _tag: "escalated"; readonly reason: string; readonly nextRebuildAt: number };

/** The crash that found the restart budget spent. */
interface BudgetSpent {
  readonly _tag: "BudgetSpent";
  readonly reason: string;
}

/** What every piece of one actor reads and writes; `spawnActor` builds one record per actor. */
interface ActorState<M, R, E> {
  readonly spec: ActorSpec<M, R, E>;
  readonly policy: RestartPolicy;
  readonly supervisor: Supervisor;
  readonly mailbox: Queue.Queue<Envelope<M, R, E>>;
  /** Everything the actor runs lives in this scope; `stop` closes it. */
  readonly lifetime: Scope.Closeable;
  phase: Phase;
  /** Messages taken from the mailbox and not yet answered. */
  inFlight: number;
  /** Callers of `drained`, woken when nothing is queued or in flight. */
  readonly drainWaiters: Set<Deferred.Deferred<void>>;
}

type Reply<R, E> = Exit.Exit<R, E | ActorCrashed | ActorStopped | ActorEscalated>;

/** The restart budget shared by one generation's workers: the step of `restartSchedule`. */
type Restarts = (now: number, reason: string) => Pull.Pull<[number, Duration.Duration], never, number>;

/** Rebuild delays across generations, and when the last rebuild happened (to tell new trouble from the same one). */
interface Rebuilds {
  step: (now: number, reason: string) => Pull.Pull<[Duration.Duration, Duration.Duration], never, Duration.Duration>;
  rebuiltAt: number | undefined;
}

export const spawnActor = <M, R, E>(spec: ActorSpec<M, R, E>, supervisor: Supervisor): Effect.Effect<ActorRef<M, R, E>> =>
  Effect.gen(function* () {
    const actor: ActorState<M, R, E> = {
      spec,
      policy: spec.restart ?? defaultRestartPolicy,
      supervisor,
      mailbox: yield* Queue.make<Envelope<M, R, E>>({ capacity: spec.capacity, strategy: "dropping" }),
      lifetime: yield* Scope.make(),
      phase: { _tag: "serving" },
      inFlight: 0,
      drainWaiters: new Set(),
    };
    yield* Effect.forkIn(supervise(actor), actor.lifetime);
    const ref: ActorRef<M, R, E> = {
      name: spec.name,
      tell: (message) => enqueue(actor, { message, reply: undefined }),
      ask: (message, timeoutMs) => ask(actor, message, timeoutMs),
      load: () => load(actor),
      stop: (graceMs) => stop(actor, graceMs),
    };
    return ref;
  });

// --- Load, draining and refusals ---

const load = <M, R, E>(actor: ActorState<M, R, E>): number =>
  actor.inFlight + (actor.phase._tag === "stopped" ? 0 : Queue.sizeUnsafe(actor.mailbox));

/** Why new work is refused now: escalated (with when it will be rebuilt) or stopped/stopping. */
const refusal = <M, R, E>(actor: ActorState<M, R, E>): ActorStopped | ActorEscalated =>
  actor.phase._tag === "escalated"
    ? new ActorEscalated({ actor: actor.spec.name, reason: actor.phase.reason, nextRebuildAt: actor.phase.nextRebuildAt })
    : new ActorStopped({ actor: actor.spec.name });

/** Wakes the `drained` waiters if nothing is queued or in flight any more. */
const notifyIfDrained = <M, R, E>(actor: ActorState<M, R, E>): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (load(actor) > 0) return Effect.void;
    const waiters = [...actor.drainWaiters];
    actor.drainWaiters.clear();
    return Effect.forEach(waiters, (waiter) => Deferred.succeed(waiter, undefined), { discard: true });
  });

/** Completes once nothing is queued or being handled. */
const drained = <M, R, E>(actor: ActorState<M, R, E>): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (load(actor) === 0) return Effect.void;
    const waiter = Deferred.makeUnsafe<void>();
    actor.drainWaiters.add(waiter);
    return Deferred.await(waiter);
  });

/** Answers everything still queued with the current refusal. */
const refuseQueued = <M, R, E>(actor: ActorState<M, R, E>): Effect.Effect<void> =>
  Effect.gen(function* () {
    const waiting = yield* Queue.clear(actor.mailbox);
    for (const envelope of waiting) {
      if (envelope.reply) yield* Deferred.fail(envelope.reply, refusal(actor));
    }
    yield* notifyIfDrained(actor);
  });

// --- The ref: tell, ask, stop ---

const enqueue = <M, R, E>(actor: ActorState<M, R, E>, envelope: Envelope<M, R, E>) =>
  Effect.gen(function* () {
    if (actor.phase._tag !== "serving") return yield* refusal(actor);
    const accepted = yield* Queue.offer(actor.mailbox, envelope);
    if (!accepted) return yield* new MailboxFull({ actor: actor.spec.name });
  });

const ask = <M, R, E>(actor: ActorState<M, R, E>, message: M, timeoutMs: number): Effect.Effect<R, E | AskError> =>
  Effect.gen(function* () {
    const reply = yield* Deferred.make<R, E | ActorCrashed | ActorStopped | ActorEscalated>();
    yield* enqueue(actor, { message, reply });
    return yield* Deferred.await(reply).pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(new AskTimeout({ actor: actor.spec.name, timeoutMs })),
      }),
    );
  });

const stop = <M, R, E>(actor: ActorState<M, R, E>, graceMs: number): Effect.Effect<void> =>
  Effect.gen(function* () {
    if (actor.phase._tag === "escalated") actor.supervisor.recover(actor.spec.name); // gone, not broken
    if (actor.phase._tag !== "stopped") actor.phase = { _tag: "stopping" };
    yield* drained(actor).pipe(Effect.timeoutOption(graceMs));
    actor.phase = { _tag: "stopped" };
    // Interrupts the workers; each incarnation's scope closes and releases what it held.
    yield* Scope.close(actor.lifetime, Exit.void);
    yield* refuseQueued(actor);
  });

// --- One message (the hot path: runs once per message, so no generators here) ---

/** Handles one message and answers it. A defect is returned (not raised) so the caller decides to restart. */
const handleOne = <M, R, E>(actor: ActorState<M, R, E>, handler: Handler<M, R, E>, envelope: Envelope<M, R, E>): Effect.Effect<string | undefined> =>
  Effect.suspend(() => {
    actor.inFlight++;
    let settled = false;
    // Answers and counts the message out in one step: no one sees it done but unanswered (a stop would
    // interrupt it and lose the reply), or answered but still in flight. Only the first call counts.
    // Runs once per message, so it stays synchronous and only touches the drain waiters when someone
    // waits. Kept inline rather than built by a helper: a helper would cost one more closure scope per message.
    const settle = (answer: Reply<R, E>): Effect.Effect<void> => {
      if (settled) return Effect.void;
      settled = true;
      actor.inFlight--;
      if (envelope.reply) Deferred.doneUnsafe(envelope.reply, answer);
      return actor.drainWaiters.size === 0 ? Effect.void : notifyIfDrained(actor);
    };
    return Effect.suspend(() => handler(envelope.message)).pipe(
      Effect.matchCauseEffect({
        onSuccess: (value) => Effect.as(settle(Exit.succeed(value)), undefined),
        onFailure: (cause) => settleFailure(actor, settle, cause),
      }),
      // Interrupted mid-message (the actor stopped, or escalated and the drain ran out): the asker still gets an answer.
      Effect.onInterrupt(() => Effect.suspend(() => settle(Exit.fail(refusal(actor))))),
    );
  });

/**
 * A typed failure is the handler's answer; a defect (or a cause with no typed failure) is a crash:
 * the asker gets ActorCrashed and the crash reason is returned so the incarnation ends.
 */
const settleFailure = <M, R, E>(
  actor: ActorState<M, R, E>,
  settle: (answer: Reply<R, E>) => Effect.Effect<void>,
  cause: Cause.Cause<E>,
): Effect.Effect<string | undefined> => {
  const defect = Cause.findDefect(cause);
  const failure = Cause.findErrorOption(cause);
  if (defect._tag === "Success" || failure._tag === "None") {
    const reason = defect._tag === "Success" ? describe(defect.success) : Cause.pretty(cause);
    return Effect.as(settle(Exit.fail(new ActorCrashed({ actor: actor.spec.name, reason }))), reason);
  }
  return Effect.as(settle(Exit.fail(failure.value)), undefined);
};

// --- Supervision: incarnations, workers, generations ---

/** One life of the handler, in its own scope: build it, then serve until it crashes. Returns the crash reason. */
const incarnation = <M, R, E>(actor: ActorState<M, R, E>, onBuilt: Effect.Effect<void>): Effect.Effect<string> =>
  Effect.scoped(
    Effect.gen(function* () {
      const built = yield* Effect.exit(Effect.suspend(() => actor.spec.init));
      if (Exit.isFailure(built)) return `init failed: ${Cause.pretty(built.cause)}`;
      yield* onBuilt;
      while (true) {
        const envelope = yield* Queue.take(actor.mailbox);
        const crash = yield* handleOne(actor, built.value, envelope);
        if (crash !== undefined) return crash;
      }
    }),
  );

/** One worker: an incarnation after another, each after the restart delay, until the budget is spent. */
const worker = <M, R, E>(actor: ActorState<M, R, E>, restarts: Restarts, generation: { ended: boolean }, onBuilt: Effect.Effect<void>) =>
  Effect.gen(function* () {
    while (!generation.ended) {
      const reason = yield* incarnation(actor, onBuilt);
      const now = yield* Clock.currentTimeMillis;
      const [, delay] = yield* restarts(now, reason).pipe(
        Pull.catchDone(() => Effect.fail<BudgetSpent>({ _tag: "BudgetSpent", reason })),
      );
      actor.supervisor.recordRestart(actor.spec.name, reason);
      yield* Effect.sleep(delay);
    }
  });

/** Run when an incarnation is built: if it is a rebuild after an escalation, the actor serves again. */
const serveAgain = <M, R, E>(actor: ActorState<M, R, E>, generation: { ended: boolean }): Effect.Effect<void> =>
  Effect.sync(() => {
    if (actor.phase._tag !== "escalated" || generation.ended) return;
    actor.phase = { _tag: "serving" };
    actor.supervisor.recover(actor.spec.name);
  });

/**
 * One generation of workers sharing one restart budget. Runs until a worker finds the
 * budget spent; then the actor escalates, lets in-flight messages finish until the
 * rebuild is due, and the generation's scope closes every incarnation still open.
 * Returns when the next generation is due.
 */
const generation = <M, R, E>(actor: ActorState<M, R, E>, rebuilds: Rebuilds): Effect.Effect<number> =>
  Effect.scoped(
    Effect.gen(function* () {
      const restarts: Restarts = yield* Schedule.toStep(restartSchedule(actor.policy));
      const state = { ended: false };
      const spent = yield* Deferred.make<string>();
      const onBuilt = serveAgain(actor, state);
      for (let i = 0; i < (actor.spec.concurrency ?? 1); i++) {
        const run = worker(actor, restarts, state, onBuilt).pipe(Effect.catch((spentBy) => Deferred.succeed(spent, spentBy.reason)));
        yield* Effect.forkScoped(run);
      }
      const reason = yield* Deferred.await(spent);
      state.ended = true;
      const nextRebuildAt = yield* escalate(actor, rebuilds, reason);
      const untilRebuild = nextRebuildAt - (yield* Clock.currentTimeMillis);
      yield* drained(actor).pipe(Effect.timeoutOption(Math.max(0, untilRebuild)));
      return nextRebuildAt;
    }),
  );

/** The restart budget is spent: refuse work until the rebuild is due, tell the supervisor. Returns when the rebuild is due. */
const escalate = <M, R, E>(actor: ActorState<M, R, E>, rebuilds: Rebuilds, reason: string): Effect.Effect<number> =>
  Effect.gen(function* () {
    const { policy } = actor;
    const now = yield* Clock.currentTimeMillis;
    // A rebuilt actor that served a whole restart window before escalating again has a new trouble: start from the base delay.
    if (rebuilds.rebuiltAt !== undefined && now - rebuilds.rebuiltAt >= policy.windowMs) rebuilds.step = yield* Schedule.toStep(rebuildSchedule(policy));
    const [, delay] = yield* rebuilds.step(now, reason).pipe(Pull.catchDone(() => Effect.succeed([0, Duration.millis(policy.rebuildMaxDelayMs)] as const)));
    const nextRebuildAt = now + Duration.toMillis(delay);
    // A stopping actor only refuses what is left: it is going away, not waiting to be rebuilt.
    if (actor.phase._tag === "serving" || actor.phase._tag === "escalated") {
      actor.phase = { _tag: "escalated", reason, nextRebuildAt };
      actor.supervisor.escalate(actor.spec.name, reason, now, nextRebuildAt);
    }
    yield* refuseQueued(actor);
    return nextRebuildAt;
  });

/** Generations forever: each escalation waits for the rebuild delay, then builds a new one. */
const supervise = <M, R, E>(actor: ActorState<M, R, E>): Effect.Effect<never> =>
  Effect.gen(function* () {
    const rebuilds: Rebuilds = { step: yield* Schedule.toStep(rebuildSchedule(actor.policy)), rebuiltAt: undefined };
    while (true) {
      const nextRebuildAt = yield* generation(actor, rebuilds);
      const now = yield* Clock.currentTimeMillis;
      yield* Effect.sleep(Math.max(0, nextRebuildAt - now));
      rebuilds.rebuiltAt = nextRebuildAt;
    }
  });

const describe = (defect: unknown): string =>
  defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect);
