// The supervisor's view of actor health as /readyz reports it: one line per escalated
// actor, from the first escalation until a rebuilt incarnation serves again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect, Fiber } from "effect";
import { TestClock } from "effect/testing";
import { spawnActor, type RestartPolicy } from "../../../actors/runtime/actor.ts";
import { makeSupervisor, readinessProblems } from "../../../actors/runtime/supervisor.ts";

test("readinessProblems: one line per escalated actor with since, reason and next rebuild; a failed rebuild keeps since; recovery clears it", () => {
  const supervisor = makeSupervisor();
  assert.deepEqual(readinessProblems(supervisor), [], "nothing escalated: ready");
  const t0 = Date.UTC(2025, 0, 2, 3, 4, 5);
  supervisor.escalate("site/mx.remote.test", "connection pool defect", t0, t0 + 30_000);
  supervisor.escalate("resolver", "boom", t0 + 1_000, t0 + 31_000);
  assert.deepEqual(readinessProblems(supervisor), [
    "actor site/mx.remote.test escalated since 2025-01-02T03:04:05.000Z: connection pool defect; rebuilding at 2025-01-02T03:04:35.000Z",
    "actor resolver escalated since 2025-01-02T03:04:06.000Z: boom; rebuilding at 2025-01-02T03:04:36.000Z",
  ]);
  // The rebuild failed: a new reason and a later rebuild, escalated since the first time.
  supervisor.escalate("site/mx.remote.test", "init failed: no route", t0 + 30_000, t0 + 90_000);
  assert.equal(
    readinessProblems(supervisor)[0],
    "actor site/mx.remote.test escalated since 2025-01-02T03:04:05.000Z: init failed: no route; rebuilding at 2025-01-02T03:05:35.000Z",
  );
  supervisor.recover("site/mx.remote.test");
  supervisor.recover("resolver");
  assert.deepEqual(readinessProblems(supervisor), []);
});

test("an actor that spent its restart budget is reported until its rebuilt incarnation serves (TestClock)", () =>
  Effect.runPromise(
    Effect.provide(
      Effect.gen(function* () {
        const supervisor = makeSupervisor();
        const policy: RestartPolicy = { baseDelayMs: 10, maxDelayMs: 10, maxRestarts: 0, windowMs: 60_000, rebuildBaseDelayMs: 30_000, rebuildMaxDelayMs: 30_000 };
        let broken = true;
        const actor = yield* spawnActor<string, string, never>(
          { name: "doomed", capacity: 10, restart: policy, init: Effect.succeed((m: string) => (broken ? Effect.die("always") : Effect.succeed(`${m} served`))) },
          supervisor,
        );
        const asked = yield* Effect.forkChild(Effect.result(actor.ask("x", 600_000)));
        yield* TestClock.adjust(1); // the crash spends the budget of 0 restarts
        yield* Fiber.join(asked);
        const problems = readinessProblems(supervisor);
        assert.equal(problems.length, 1);
        assert.match(problems[0]!, /^actor doomed escalated since 1970-01-01T00:00:00\.\d{3}Z: always; rebuilding at 1970-01-01T00:00:\d{2}\.\d{3}Z$/);

        broken = false;
        yield* TestClock.setTime(supervisor.escalated().get("doomed")!.nextRebuildAt);
        yield* TestClock.adjust(1);
        assert.equal(yield* actor.ask("y", 600_000), "y served");
        assert.deepEqual(readinessProblems(supervisor), [], "ready again");
        yield* actor.stop(0);
      }),
      TestClock.layer(),
    ),
  ));
