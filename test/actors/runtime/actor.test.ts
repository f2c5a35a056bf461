import { test } from "node:test";
import assert from "node:assert/strict";
import { Duration, Effect, Fiber, Pull, Schedule, Schema } from "effect";
import { TestClock } from "effect/testing";
import { rebuildSchedule, restartSchedule, spawnActor, type RestartPolicy } from "../../../actors/runtime/actor.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";

class Odd extends Schema.TaggedError<Odd>()("Odd", { n: Schema.Number }) {}

const fastRestarts: RestartPolicy = { baseDelayMs: 1, maxDelayMs: 5, maxRestarts: 3, windowMs: 60_000, rebuildBaseDelayMs: 60_000, rebuildMaxDelayMs: 60_000 };
const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.result(effect));
/** Runs a test program on a TestClock: restart and rebuild delays pass only when the test says so. */
const onTestClock = <A, E>(program: Effect.Effect<A, E>) => Effect.runPromise(Effect.provide(program, TestClock.layer()));
const tagOf = (result: { _tag: "Success" } | { _tag: "Failure"; failure: { _tag: string } }) => (result._tag === "Failure" ? result.failure._tag : "Success");

test("ask returns the handler's value or its typed failure", async () => {
  const actor = await Effect.runPromise(
    spawnActor<number, number, Odd>(
      {
        name: "doubler",
        capacity: 10,
        init: Effect.succeed((n: number) => (n % 2 === 0 ? Effect.succeed(n * 2) : Effect.fail(new Odd({ n })))),
      },
      makeSupervisor(),
    ),
  );
  assert.deepEqual(await Effect.runPromise(actor.ask(21 - 1, 1000)), 40);
  const failed = await run(actor.ask(3, 1000));
  assert.equal(failed._tag, "Failure");
  assert.equal(failed._tag === "Failure" && failed.failure._tag, "Odd");
  await Effect.runPromise(actor.stop(100));
});

test("a full mailbox refuses with MailboxFull instead of growing", async () => {
  let release!: () => void;
  let started!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const running = new Promise<void>((resolve) => (started = resolve));
  const actor = await Effect.runPromise(
    spawnActor<number, void, never>(
      { name: "slow", capacity: 2, init: Effect.succeed(() => Effect.sync(started).pipe(Effect.andThen(Effect.promise(() => gate)))) },
      makeSupervisor(),
    ),
  );
  await Effect.runPromise(actor.tell(1));
  await running; // taken by the worker, blocks on the gate
  await Effect.runPromise(actor.tell(2));
  await Effect.runPromise(actor.tell(3));
  const overflow = await run(actor.tell(4));
  assert.equal(overflow._tag === "Failure" && overflow.failure._tag, "MailboxFull");
  release();
  await Effect.runPromise(actor.stop(1000));
});

test("a crashing handler restarts, the crash is reported, and queued messages survive", async () => {
  const restarts: string[] = [];
  let incarnations = 0;
  const actor = await Effect.runPromise(
    spawnActor<string, string, never>(
      {
        name: "fragile",
        capacity: 10,
        restart: fastRestarts,
        init: Effect.sync(() => {
          incarnations++;
          const life = incarnations;
          return (m: string) =>
            Effect.sync(() => {
              if (m === "boom") throw new Error("kaboom");
              return `${m}@${life}`;
            });
        }),
      },
      makeSupervisor({ onRestart: (name, reason) => restarts.push(`${name}: ${reason}`) }),
    ),
  );
  const crash = actor.ask("boom", 1000);
  const after = actor.ask("hello", 1000); // queued behind the crash
  const [crashed, survived] = await Promise.all([run(crash), Effect.runPromise(after)]);
  assert.equal(crashed._tag === "Failure" && crashed.failure._tag, "ActorCrashed");
  assert.equal(survived, "hello@2");
  assert.deepEqual(restarts, ["fragile: Error: kaboom"]);
  await Effect.runPromise(actor.stop(100));
});

test("what an incarnation acquired is released when it crashes and when the actor stops", async () => {
  const open = new Set<number>();
  let next = 0;
  const actor = await Effect.runPromise(
    spawnActor<string, number, never>(
      {
        name: "holder",
        capacity: 10,
        restart: fastRestarts,
        init: Effect.gen(function* () {
          const id = yield* Effect.acquireRelease(
            Effect.sync(() => (open.add(next), next++)),
            (id) => Effect.sync(() => open.delete(id)),
          );
          return (m: string) => (m === "boom" ? Effect.die("crash") : Effect.succeed(id));
        }),
      },
      makeSupervisor(),
    ),
  );
  assert.equal(await Effect.runPromise(actor.ask("hi", 1000)), 0);
  assert.deepEqual([...open], [0]);
  assert.equal(tagOf(await run(actor.ask("boom", 1000))), "ActorCrashed");
  assert.equal(await Effect.runPromise(actor.ask("hi", 1000)), 1, "served by the next incarnation");
  assert.deepEqual([...open], [1], "the crashed incarnation's resource was released");
  await Effect.runPromise(actor.stop(100));
  assert.equal(open.size, 0, "stopping releases the live incarnation's resource");
});

test("restarts wait for the restart delay (on the clock, not a sleep)", () =>
  onTestClock(
    Effect.gen(function* () {
      let built = 0;
      const policy = { ...fastRestarts, baseDelayMs: 1_000, maxDelayMs: 10_000 };
      const actor = yield* spawnActor<string, string, never>(
        { name: "patient", capacity: 10, restart: policy, init: Effect.sync(() => (built++, (m: string) => (m === "boom" ? Effect.die("crash") : Effect.succeed(m)))) },
        makeSupervisor(),
      );
      assert.equal(tagOf(yield* Effect.result(actor.ask("boom", 60_000))), "ActorCrashed");
      const waiting = yield* Effect.forkChild(actor.ask("hello", 60_000));
      yield* TestClock.adjust(700); // below the smallest jittered first delay (0.8 × 1 s)
      assert.equal(built, 1, "not rebuilt before the restart delay");
      yield* TestClock.adjust(600); // past the largest (1.2 × 1 s)
      assert.equal(yield* Fiber.join(waiting), "hello");
      assert.equal(built, 2);
      yield* actor.stop(0);
    }),
  ));

test("an actor that spent its restart budget escalates, refuses fast, is rebuilt after the slower delay and serves again", () =>
  onTestClock(
    Effect.gen(function* () {
      const events: string[] = [];
      const supervisor = makeSupervisor({ onEscalate: (name) => events.push(`escalated ${name}`), onRecover: (name) => events.push(`recovered ${name}`) });
      const policy: RestartPolicy = { baseDelayMs: 10, maxDelayMs: 10, maxRestarts: 3, windowMs: 60_000, rebuildBaseDelayMs: 30_000, rebuildMaxDelayMs: 120_000 };
      let broken = true;
      const actor = yield* spawnActor<string, string, never>(
        { name: "doomed", capacity: 10, restart: policy, init: Effect.succeed((m: string) => (broken ? Effect.die("always") : Effect.succeed(`${m} served`))) },
        supervisor,
      );
      // Four crashes: three restarts fit the budget, the fourth escalates.
      for (let i = 0; i < 4; i++) {
        const asked = yield* Effect.forkChild(Effect.result(actor.ask("x", 600_000)));
        yield* TestClock.adjust(20);
        assert.equal(tagOf(yield* Fiber.join(asked)), "ActorCrashed");
      }
      const escalation = supervisor.escalated().get("doomed");
      assert.ok(escalation, "the supervisor reports the escalation");
      assert.equal(escalation.reason, "always");
      const escalatedAt = yield* TestClock.testClockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe()));
      const wait = escalation.nextRebuildAt - escalatedAt;
      assert.ok(wait >= 24_000 && wait <= 36_000, `rebuild in 30 s ± 20 %, got ${wait} ms`);

      const refused = yield* Effect.result(actor.ask("x", 600_000));
      assert.equal(tagOf(refused), "ActorEscalated", "asks fail fast while escalated");
      assert.equal(refused._tag === "Failure" && refused.failure._tag === "ActorEscalated" && refused.failure.nextRebuildAt, escalation.nextRebuildAt);

      broken = false;
      yield* TestClock.adjust(wait - 1);
      assert.ok(supervisor.escalated().has("doomed"), "still escalated just before the rebuild");
      assert.equal(tagOf(yield* Effect.result(actor.ask("x", 600_000))), "ActorEscalated");
      yield* TestClock.adjust(1);
      assert.equal(yield* actor.ask("y", 600_000), "y served", "rebuilt and serving");
      assert.equal(supervisor.escalated().size, 0, "the escalation is cleared");
      assert.deepEqual(events, ["escalated doomed", "recovered doomed"]);
      yield* actor.stop(0);
    }),
  ));

test("a rebuild that cannot build escalates again with a longer delay, still escalated since the first time", () =>
  onTestClock(
    Effect.gen(function* () {
      const supervisor = makeSupervisor();
      const policy: RestartPolicy = { baseDelayMs: 10, maxDelayMs: 10, maxRestarts: 0, windowMs: 60_000, rebuildBaseDelayMs: 30_000, rebuildMaxDelayMs: 120_000 };
      let builds = 0;
      const actor = yield* spawnActor<string, string, never>(
        { name: "hopeless", capacity: 10, restart: policy, init: Effect.suspend(() => (builds++ === 0 ? Effect.succeed(() => Effect.die("always")) : Effect.die("cannot build"))) },
        supervisor,
      );
      assert.equal(tagOf(yield* Effect.result(actor.ask("x", 600_000))), "ActorCrashed");
      yield* TestClock.adjust(1); // lets the actor escalate
      const first = supervisor.escalated().get("hopeless")!;
      assert.equal(first.reason, "always");
      yield* TestClock.setTime(first.nextRebuildAt);
      yield* TestClock.adjust(1);
      assert.equal(builds, 2, "a rebuild was tried");
      const second = supervisor.escalated().get("hopeless")!;
      assert.match(second.reason, /^init failed/);
      assert.equal(second.since, first.since, "escalated without a break");
      const wait = second.nextRebuildAt - first.nextRebuildAt;
      assert.ok(wait >= 48_000 && wait <= 72_000, `second rebuild in 60 s ± 20 %, got ${wait} ms`);
      assert.equal(tagOf(yield* Effect.result(actor.ask("x", 600_000))), "ActorEscalated");
      yield* actor.stop(0);
      assert.equal(supervisor.escalated().size, 0, "a stopped actor is no longer reported escalated");
    }),
  ));

test("ask times out with AskTimeout", async () => {
  const actor = await Effect.runPromise(
    spawnActor<string, string, never>({ name: "mute", capacity: 1, init: Effect.succeed(() => Effect.never) }, makeSupervisor()),
  );
  const timedOut = await run(actor.ask("x", 20));
  assert.equal(timedOut._tag === "Failure" && timedOut.failure._tag, "AskTimeout");
  await Effect.runPromise(actor.stop(0));
});

test("stop lets queued messages finish within the grace period, then refuses", async () => {
  const handled: number[] = [];
  const actor = await Effect.runPromise(
    spawnActor<number, void, never>({ name: "draining", capacity: 10, init: Effect.succeed((n: number) => Effect.sleep(5).pipe(Effect.andThen(Effect.sync(() => handled.push(n))))) }, makeSupervisor()),
  );
  for (const n of [1, 2, 3]) await Effect.runPromise(actor.tell(n));
  await Effect.runPromise(actor.stop(5_000));
  assert.deepEqual(handled, [1, 2, 3]);
  assert.equal(tagOf(await run(actor.tell(4))), "ActorStopped");
});

const delaysOf = (schedule: Schedule.Schedule<unknown>, times: ReadonlyArray<number>) =>
  Effect.runSync(
    Effect.gen(function* () {
      const step = yield* Schedule.toStep(schedule);
      const delays: Array<number | "escalate"> = [];
      for (const now of times) {
        delays.push(yield* step(now, undefined).pipe(Effect.map(([, d]) => Duration.toMillis(d)), Pull.catchDone(() => Effect.succeed("escalate" as const))));
      }
      return delays;
    }),
  );

test("restart delays grow exponentially, are capped and jittered, and the budget is restarts per sliding window", () => {
  const policy: RestartPolicy = { ...fastRestarts, baseDelayMs: 100, maxDelayMs: 1_000, maxRestarts: 5, windowMs: 10_000 };
  const delays = delaysOf(restartSchedule(policy), [0, 1, 2, 3, 4, 5]);
  for (const [n, expected] of [100, 200, 400, 800, 1_000].entries()) {
    const delay = delays[n] as number;
    assert.ok(delay >= expected * 0.8 && delay <= Math.min(1_000, expected * 1.2), `restart ${n}: ${delay} ms near ${expected}`);
  }
  assert.equal(delays[5], "escalate", "the sixth restart inside the window escalates");
  // Spread out: never more than two restarts inside the window, so the budget is never spent and the delay stays low.
  const spread = delaysOf(restartSchedule(policy), [0, 6_000, 12_000, 18_000, 24_000, 30_000, 36_000]);
  assert.ok(spread.every((d) => d !== "escalate" && d <= 240), `spread out restarts: ${spread.join(", ")}`);
});

test("rebuild delays start at tens of seconds and are capped", () => {
  const policy: RestartPolicy = { ...fastRestarts, rebuildBaseDelayMs: 30_000, rebuildMaxDelayMs: 300_000 };
  const delays = delaysOf(rebuildSchedule(policy), [0, 0, 0, 0, 0, 0, 0]) as number[];
  assert.ok(delays[0]! >= 24_000 && delays[0]! <= 36_000);
  assert.ok(delays[1]! >= 48_000 && delays[1]! <= 72_000);
  assert.ok(delays.every((d) => d <= 300_000));
  assert.equal(delays[6], 300_000);
});
