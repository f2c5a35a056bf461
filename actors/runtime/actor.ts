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

export const spawnActor = <M, R, E>(spec: ActorSpec<M, R, E>, supervisor: Supervisor): Effect.Effect<ActorRef<M, R, E>> =>
  Effect.gen(function* () {
    const policy = spec.restart ?? defaultRestartPolicy;
    const mailbox = yield* Queue.make<Envelope<M, R, E>>({ capacity: spec.capacity, strategy: "dropping" });
    // Everything the actor runs lives in this scope; `stop` closes it.
    const lifetime = yield* Scope.make();
    let phase: Phase = { _tag: "serving" };
    let inFlight = 0;
    const drainWaiters = new Set<Deferred.Deferred<void>>();

    const load = () => inFlight + (phase._tag === "stopped" ? 0 : Queue.sizeUnsafe(mailbox));

    const refusal = (): ActorStopped | ActorEscalated =>
      phase._tag === "escalated"
        ? new ActorEscalated({ actor: spec.name, reason: phase.reason, nextRebuildAt: phase.nextRebuildAt })
        : new ActorStopped({ actor: spec.name });

    const notifyIfDrained = Effect.suspend(() => {
      if (load() > 0) return Effect.void;
      const waiters = [...drainWaiters];
      drainWaiters.clear();
      return Effect.forEach(waiters, (waiter) => Deferred.succeed(waiter, undefined), { discard: true });
    });

    /** Completes once nothing is queued or being handled. */
    const drained = Effect.suspend(() => {
      if (load() === 0) return Effect.void;
      const waiter = Deferred.makeUnsafe<void>();
      drainWaiters.add(waiter);
      return Deferred.await(waiter);
    });

    /** Answers everything still queued with the current refusal. */
    const refuseQueued = Effect.gen(function* () {
      const waiting = yield* Queue.clear(mailbox);
      for (const envelope of waiting) {
        if (envelope.reply) yield* Deferred.fail(envelope.reply, refusal());
      }
      yield* notifyIfDrained;
    });

    const enqueue = (envelope: Envelope<M, R, E>) =>
      Effect.gen(function* () {
        if (phase._tag !== "serving") return yield* refusal();
        const accepted = yield* Queue.offer(mailbox, envelope);
        if (!accepted) return yield* new MailboxFull({ actor: spec.name });
      });

    /** Handles one message and answers it. A defect is returned (not raised) so the caller decides to restart. */
    const handleOne = (handler: Handler<M, R, E>, envelope: Envelope<M, R, E>): Effect.Effect<string | undefined> =>
      Effect.suspend(() => {
        inFlight++;
        let settled = false;
        // Answers and counts the message out in one step: no one sees it done but unanswered (a stop would
        // interrupt it and lose the reply), or answered but still in flight. Runs once per message, so
        // it stays synchronous and only touches the drain waiters when someone waits.
        const settle = (answer: Exit.Exit<R, E | ActorCrashed | ActorStopped | ActorEscalated>): Effect.Effect<void> => {
          if (settled) return Effect.void;
          settled = true;
          inFlight--;
          if (envelope.reply) Deferred.doneUnsafe(envelope.reply, answer);
          return drainWaiters.size === 0 ? Effect.void : notifyIfDrained;
        };
        return Effect.suspend(() => handler(envelope.message)).pipe(
          Effect.matchCauseEffect({
            onSuccess: (value) => Effect.as(settle(Exit.succeed(value)), undefined),
            onFailure: (cause) => {
              const defect = Cause.findDefect(cause);
              const failure = Cause.findErrorOption(cause);
              if (defect._tag === "Success" || failure._tag === "None") {
                const reason = defect._tag === "Success" ? describe(defect.success) : Cause.pretty(cause);
                return Effect.as(settle(Exit.fail(new ActorCrashed({ actor: spec.name, reason }))), reason);
              }
              return Effect.as(settle(Exit.fail(failure.value)), undefined);
            },
          }),
          // Interrupted mid-message (the actor stopped, or escalated and the drain ran out): the asker still gets an answer.
          Effect.onInterrupt(() => Effect.suspend(() => settle(Exit.fail(refusal())))),
        );
      });

    /** One life of the handler, in its own scope: build it, then serve until it crashes. Returns the crash reason. */
    const incarnation = (onBuilt: Effect.Effect<void>) =>
      Effect.scoped(
        Effect.gen(function* () {
          const built = yield* Effect.exit(Effect.suspend(() => spec.init));
          if (Exit.isFailure(built)) return `init failed: ${Cause.pretty(built.cause)}`;
          yield* onBuilt;
          while (true) {
            const envelope = yield* Queue.take(mailbox);
            const crash = yield* handleOne(built.value, envelope);
            if (crash !== undefined) return crash;
          }
        }),
      );

    type Restarts = (now: number, reason: string) => Pull.Pull<[number, Duration.Duration], never, number>;

    /** One worker: an incarnation after another, each after the restart delay, until the budget is spent. */
    const worker = (restarts: Restarts, generation: { ended: boolean }, onBuilt: Effect.Effect<void>) =>
      Effect.gen(function* () {
        while (!generation.ended) {
          const reason = yield* incarnation(onBuilt);
          const now = yield* Clock.currentTimeMillis;
          const [, delay] = yield* restarts(now, reason).pipe(
            Pull.catchDone(() => Effect.fail<BudgetSpent>({ _tag: "BudgetSpent", reason })),
          );
          supervisor.recordRestart(spec.name, reason);
          yield* Effect.sleep(delay);
        }
      });

    /**
     * One generation of workers sharing one restart budget. Runs until a worker finds the
     * budget spent; then the actor escalates, lets in-flight messages finish until the
     * rebuild is due, and the generation's scope closes every incarnation still open.
     */
    const generation = (escalate: (reason: string) => Effect.Effect<number>) =>
      Effect.scoped(
        Effect.gen(function* () {
          const restarts: Restarts = yield* Schedule.toStep(restartSchedule(policy));
          const state = { ended: false };
          const spent = yield* Deferred.make<string>();
          // A rebuilt incarnation is up: the actor serves again.
          const onBuilt = Effect.sync(() => {
            if (phase._tag !== "escalated" || state.ended) return;
            phase = { _tag: "serving" };
            supervisor.recover(spec.name);
          });
          for (let i = 0; i < (spec.concurrency ?? 1); i++) {
            yield* Effect.forkScoped(worker(restarts, state, onBuilt).pipe(Effect.catch((spentBy) => Deferred.succeed(spent, spentBy.reason))));
          }
          const reason = yield* Deferred.await(spent);
          state.ended = true;
          const nextRebuildAt = yield* escalate(reason);
          const untilRebuild = nextRebuildAt - (yield* Clock.currentTimeMillis);
          yield* drained.pipe(Effect.timeoutOption(Math.max(0, untilRebuild)));
          return nextRebuildAt;
        }),
      );

    /** Generations forever: each escalation waits for the rebuild delay, then builds a new one. */
    const supervise = Effect.gen(function* () {
      let rebuilds = yield* Schedule.toStep(rebuildSchedule(policy));
      let rebuiltAt: number | undefined;
      const escalate = (reason: string) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis;
          // A rebuilt actor that served a whole restart window before escalating again has a new trouble: start from the base delay.
          if (rebuiltAt !== undefined && now - rebuiltAt >= policy.windowMs) rebuilds = yield* Schedule.toStep(rebuildSchedule(policy));
          const [, delay] = yield* rebuilds(now, reason).pipe(Pull.catchDone(() => Effect.succeed([0, Duration.millis(policy.rebuildMaxDelayMs)] as const)));
          const nextRebuildAt = now + Duration.toMillis(delay);
          // A stopping actor only refuses what is left: it is going away, not waiting to be rebuilt.
          if (phase._tag === "serving" || phase._tag === "escalated") {
            phase = { _tag: "escalated", reason, nextRebuildAt };
            supervisor.escalate(spec.name, reason, now, nextRebuildAt);
          }
          yield* refuseQueued;
          return nextRebuildAt;
        });
      while (true) {
        const nextRebuildAt = yield* generation(escalate);
        const now = yield* Clock.currentTimeMillis;
        yield* Effect.sleep(Math.max(0, nextRebuildAt - now));
        rebuiltAt = nextRebuildAt;
      }
    });

    yield* Effect.forkIn(supervise, lifetime);

    const ref: ActorRef<M, R, E> = {
      name: spec.name,
      tell: (message) => enqueue({ message, reply: undefined }),
      ask: (message, timeoutMs) =>
        Effect.gen(function* () {
          const reply = yield* Deferred.make<R, E | ActorCrashed | ActorStopped | ActorEscalated>();
          yield* enqueue({ message, reply });
          return yield* Deferred.await(reply).pipe(
            Effect.timeoutOrElse({
              duration: timeoutMs,
              orElse: () => Effect.fail(new AskTimeout({ actor: spec.name, timeoutMs })),
            }),
          );
        }),
      load,
      stop: (graceMs) =>
        Effect.gen(function* () {
          if (phase._tag === "escalated") supervisor.recover(spec.name); // gone, not broken
          if (phase._tag !== "stopped") phase = { _tag: "stopping" };
          yield* drained.pipe(Effect.timeoutOption(graceMs));
          phase = { _tag: "stopped" };
          // Interrupts the workers; each incarnation's scope closes and releases what it held.
          yield* Scope.close(lifetime, Exit.void);
          yield* refuseQueued;
        }),
    };
    return ref;
  });

const describe = (defect: unknown): string =>
  defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect);
