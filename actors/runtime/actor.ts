// The actor runtime: a named actor with a bounded mailbox, `tell` and `ask`,
// and a supervised handler.
//
// The mailbox lives outside the part that restarts: when a handler dies (a defect,
// i.e. a throw or Effect.die), the message that killed it is answered with
// ActorCrashed, the handler is rebuilt by running `init` again after a capped,
// jittered delay, and queued messages wait for it. More than `maxRestarts`
// restarts inside `windowMs` escalates: the actor stops and the supervisor
// marks the node not-ready.
import { Cause, Clock, Deferred, Effect, Exit, Fiber, Queue } from "effect";
import { ActorCrashed, ActorStopped, AskTimeout, MailboxFull } from "../../protocol/errors.ts";
import type { Supervisor } from "./supervisor.ts";

export interface RestartPolicy {
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Restarts allowed inside `windowMs` before escalating. */
  readonly maxRestarts: number;
  readonly windowMs: number;
}

export const defaultRestartPolicy: RestartPolicy = {
  baseDelayMs: 50,
  maxDelayMs: 5_000,
  maxRestarts: 10,
  windowMs: 60_000,
};

export type Handler<M, R, E> = (message: M) => Effect.Effect<R, E>;

export interface ActorSpec<M, R, E> {
  readonly name: string;
  /** Mailbox bound; a full mailbox makes tell/ask fail with MailboxFull. */
  readonly capacity: number;
  /** Messages handled at once (default 1: strictly one after another). */
  readonly concurrency?: number;
  readonly restart?: RestartPolicy;
  /** Builds the handler. Runs again after every crash, so state is rebuilt fresh. */
  readonly init: Effect.Effect<Handler<M, R, E>>;
}

export type AskError = MailboxFull | AskTimeout | ActorCrashed | ActorStopped;

export interface ActorRef<M, R, E> {
  readonly name: string;
  readonly tell: (message: M) => Effect.Effect<void, MailboxFull | ActorStopped>;
  readonly ask: (message: M, timeoutMs: number) => Effect.Effect<R, E | AskError>;
  /** Messages waiting plus messages being handled. */
  readonly load: () => number;
  /** Refuses new messages, lets queued and in-flight ones finish (up to `graceMs`), then stops. */
  readonly stop: (graceMs: number) => Effect.Effect<void>;
}

interface Envelope<M, R, E> {
  readonly message: M;
  readonly reply: Deferred.Deferred<R, E | ActorCrashed | ActorStopped> | undefined;
}

/** Delay before restart number `attempt` (0-based): exponential, capped, with jitter in [50%, 100%]. */
export const restartDelayMs = (policy: RestartPolicy, attempt: number, random: number): number => {
  const exponential = policy.baseDelayMs * 2 ** Math.min(attempt, 30);
  return Math.round(Math.min(policy.maxDelayMs, exponential) * (0.5 + random / 2));
};

export const spawnActor = <M, R, E>(
  spec: ActorSpec<M, R, E>,
  supervisor: Supervisor,
): Effect.Effect<ActorRef<M, R, E>> =>
  Effect.gen(function* () {
    const policy = spec.restart ?? defaultRestartPolicy;
    const mailbox = yield* Queue.make<Envelope<M, R, E>>({ capacity: spec.capacity, strategy: "dropping" });
    const state = { accepting: true, stopped: false, inFlight: 0, restartTimes: [] as number[] };

    const enqueue = (envelope: Envelope<M, R, E>) =>
      Effect.gen(function* () {
        if (!state.accepting) return yield* new ActorStopped({ actor: spec.name });
        const accepted = yield* Queue.offer(mailbox, envelope);
        if (!accepted) return yield* new MailboxFull({ actor: spec.name });
      });

    /** Handles one message. A defect is returned (not raised) so the caller decides to restart. */
    const handleOne = (handler: Handler<M, R, E>, envelope: Envelope<M, R, E>) =>
      Effect.gen(function* () {
        state.inFlight++;
        const exit = yield* Effect.exit(Effect.suspend(() => handler(envelope.message)));
        state.inFlight--;
        if (Exit.isSuccess(exit)) {
          if (envelope.reply) yield* Deferred.succeed(envelope.reply, exit.value);
          return undefined;
        }
        const defect = Cause.findDefect(exit.cause);
        const failure = Cause.findErrorOption(exit.cause);
        if (defect._tag === "Success" || failure._tag === "None") {
          const reason = defect._tag === "Success" ? describe(defect.success) : Cause.pretty(exit.cause);
          if (envelope.reply) yield* Deferred.fail(envelope.reply, new ActorCrashed({ actor: spec.name, reason }));
          return reason;
        }
        if (envelope.reply) yield* Deferred.fail(envelope.reply, failure.value);
        return undefined;
      });

    /** One life of the handler: build it, then serve until it crashes. Returns the crash reason. */
    const incarnation = Effect.gen(function* () {
      const built = yield* Effect.exit(Effect.suspend(() => spec.init));
      if (Exit.isFailure(built)) return `init failed: ${Cause.pretty(built.cause)}`;
      while (true) {
        const envelope = yield* Queue.take(mailbox);
        const crash = yield* handleOne(built.value, envelope);
        if (crash !== undefined) return crash;
      }
    });

    /** Returns true when the crash is within budget (the worker restarts), false to escalate. */
    const admitRestart = (reason: string) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis;
        state.restartTimes = state.restartTimes.filter((t) => now - t < policy.windowMs);
        if (state.restartTimes.length >= policy.maxRestarts) {
          supervisor.escalate(spec.name, reason);
          return false;
        }
        const attempt = state.restartTimes.length;
        state.restartTimes.push(now);
        supervisor.recordRestart(spec.name, reason);
        yield* Effect.sleep(restartDelayMs(policy, attempt, Math.random()));
        return true;
      });

    const worker = Effect.gen(function* () {
      while (true) {
        const reason = yield* incarnation;
        if (!(yield* admitRestart(reason))) return yield* shutDown;
      }
    });

    /** Stops for good: answers everything still queued with ActorStopped. */
    const shutDown = Effect.gen(function* () {
      state.accepting = false;
      state.stopped = true;
      const waiting = yield* Queue.clear(mailbox);
      for (const envelope of waiting) {
        if (envelope.reply) yield* Deferred.fail(envelope.reply, new ActorStopped({ actor: spec.name }));
      }
    });

    const workers = [] as Array<Fiber.Fiber<unknown>>;
    for (let i = 0; i < (spec.concurrency ?? 1); i++) workers.push(yield* Effect.forkDetach(worker));

    const ref: ActorRef<M, R, E> = {
      name: spec.name,
      tell: (message) => enqueue({ message, reply: undefined }),
      ask: (message, timeoutMs) =>
        Effect.gen(function* () {
          const reply = yield* Deferred.make<R, E | ActorCrashed | ActorStopped>();
          yield* enqueue({ message, reply });
          return yield* Deferred.await(reply).pipe(
            Effect.timeoutOrElse({
              duration: timeoutMs,
              orElse: () => Effect.fail(new AskTimeout({ actor: spec.name, timeoutMs })),
            }),
          );
        }),
      load: () => state.inFlight + (state.stopped ? 0 : Queue.sizeUnsafe(mailbox)),
      stop: (graceMs) =>
        Effect.gen(function* () {
          state.accepting = false;
          const deadline = (yield* Clock.currentTimeMillis) + graceMs;
          while (ref.load() > 0 && (yield* Clock.currentTimeMillis) < deadline) yield* Effect.sleep(10);
          yield* Fiber.interruptAll(workers);
          yield* shutDown;
        }),
    };
    return ref;
  });

const describe = (defect: unknown): string =>
  defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect);
