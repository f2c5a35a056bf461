// The pull budget on its own: a reservation holds its bytes while its scope is open and
// gives them back however the scope ends (done, failed, interrupted); above a cap (overall
// bytes, bytes per peer, pulls at once) a pull is refused at once with RemoteBusy.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Deferred, Effect, Exit, Fiber, Scope } from "effect";
import { makePullBudget, type PullRefusal } from "../../../actors/runtime/pull-budget.ts";
import { RemoteBusy } from "../../../protocol/errors.ts";

const MB = 1024 * 1024;
const limits = { maxBytes: 10 * MB, maxBytesPerPeer: 6 * MB, maxConcurrent: 3 };

/** The failure of a reservation expected to be refused. */
const refusal = (exit: Exit.Exit<unknown, RemoteBusy>): RemoteBusy => {
  assert.ok(Exit.isFailure(exit), "expected a refusal");
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail");
  assert.ok(reason?._tag === "Fail" && reason.error instanceof RemoteBusy, "refused with RemoteBusy");
  return reason.error;
};

test("a reservation holds its bytes while its scope is open and gives them back when it closes", async () => {
  const budget = makePullBudget(limits);
  await Effect.runPromise(
    Effect.gen(function* () {
      const scope = yield* Scope.make();
      yield* budget.reserve("n1", 4 * MB, "s").pipe(Scope.provide(scope));
      assert.deepEqual(budget.inUse(), { bytes: 4 * MB, pulls: 1 });
      assert.deepEqual(budget.inUseBy("n1"), { bytes: 4 * MB, pulls: 1 });
      yield* Scope.close(scope, Exit.void);
      assert.deepEqual(budget.inUse(), { bytes: 0, pulls: 0 });
      assert.deepEqual(budget.inUseBy("n1"), { bytes: 0, pulls: 0 });
    }),
  );
});

test("each cap refuses with RemoteBusy at once and names itself; room comes back when a pull ends", async () => {
  const refused: PullRefusal[] = [];
  const budget = makePullBudget(limits, { onRefused: (reason) => refused.push(reason) });
  await Effect.runPromise(
    Effect.gen(function* () {
      const first = yield* Scope.make();
      yield* budget.reserve("n1", 5 * MB, "s").pipe(Scope.provide(first));
      // n1 has 5 of its 6 MB: 2 more is over the per-peer cap, though the node has room.
      const perPeer = refusal(yield* Effect.exit(Effect.scoped(budget.reserve("n1", 2 * MB, "s"))));
      assert.match(perPeer.detail, /from n1.*per peer/);
      // Another peer gets the room n1 cannot use, up to the overall cap.
      yield* budget.reserve("n2", 4 * MB, "s").pipe(Scope.provide(first));
      const overall = refusal(yield* Effect.exit(Effect.scoped(budget.reserve("n3", 2 * MB, "s"))));
      assert.match(overall.detail, /cap of 10485760/);
      yield* budget.reserve("n3", 1 * MB, "s").pipe(Scope.provide(first));
      // Three pulls in progress: a fourth is refused, however small.
      refusal(yield* Effect.exit(Effect.scoped(budget.reserve("n4", 1, "s"))));
      assert.deepEqual(refused, ["peer-bytes", "bytes", "concurrency"]);
      assert.deepEqual(budget.inUse(), { bytes: 10 * MB, pulls: 3 }, "refusals took nothing");

      yield* Scope.close(first, Exit.void);
      yield* Effect.scoped(budget.reserve("n1", 6 * MB, "s"));
      assert.deepEqual(budget.inUse(), { bytes: 0, pulls: 0 });
    }),
  );
});

test("a pull that fails or is interrupted gives its reservation back", async () => {
  const budget = makePullBudget(limits);
  await Effect.runPromise(
    Effect.gen(function* () {
      const failed = yield* Effect.exit(Effect.scoped(budget.reserve("n1", 3 * MB, "s").pipe(Effect.andThen(Effect.fail("chunk lost")))));
      assert.ok(Exit.isFailure(failed));
      assert.deepEqual(budget.inUse(), { bytes: 0, pulls: 0 });

      const reserved = yield* Deferred.make<void>();
      const stuck = yield* Effect.forkChild(
        Effect.scoped(budget.reserve("n1", 3 * MB, "s").pipe(Effect.andThen(Deferred.succeed(reserved, undefined)), Effect.andThen(Effect.never))),
      );
      yield* Deferred.await(reserved);
      assert.deepEqual(budget.inUse(), { bytes: 3 * MB, pulls: 1 });
      yield* Fiber.interrupt(stuck);
      assert.deepEqual(budget.inUse(), { bytes: 0, pulls: 0 });
      assert.deepEqual(budget.inUseBy("n1"), { bytes: 0, pulls: 0 });
    }),
  );
});
