// The spool health probe: after a failed commit the spool is unhealthy (new SMTP
// connections get 421) until a probe write succeeds; probes come every 2 s (TestClock).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect, Queue, type Scope } from "effect";
import { TestClock } from "effect/testing";
import { open, type RootDatabase } from "lmdb";
import { StoreError } from "../../../protocol/errors.ts";
import { makeSpoolHealth, PROBE_INTERVAL_MS } from "../../../actors/queue/spool-health.ts";
import { openSpool, type Spool } from "../../../actors/queue/spool.ts";

const dirs: string[] = [];
const roots: RootDatabase[] = [];
after(async () => {
  await Promise.all(roots.map((r) => r.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const runTest = <A, E>(program: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(TestClock.layer({ warningDelay: "1 minute" }))));

/** A real spool whose probe fails while `broken` says so (a full disk, say), counting probes. */
const flakySpool = async () => {
  const dir = await mkdtemp(join(tmpdir(), "tern-spool-health-"));
  dirs.push(dir);
  const root = open({ path: join(dir, "tern.lmdb"), maxDbs: 64 });
  roots.push(root);
  const spool: Spool = openSpool(root);
  const state = { broken: true, probes: 0 };
  const probe = () =>
    Effect.suspend(() => {
      state.probes++;
      return state.broken ? Effect.fail(new StoreError({ operation: "probe", detail: "MDB_MAP_FULL" })) : spool.probe();
    });
  return { state, spool: { probe } };
};

test("after a failed commit the spool is unhealthy until a probe write succeeds, probing every 2 s", () =>
  runTest(
    Effect.gen(function* () {
      const { state, spool } = yield* Effect.promise(flakySpool);
      const logged: string[] = [];
      const events = yield* Queue.unbounded<string>();
      const health = yield* makeSpoolHealth(spool, (event) => {
        logged.push(event);
        Queue.offerUnsafe(events, event);
      });
      /** Waits for the log line (the successful probe is a real LMDB commit: I/O, not the schedule). */
      const logs = (event: string): Effect.Effect<void> => Effect.flatMap(Queue.take(events), (e) => (e === event ? Effect.void : logs(event)));
      assert.equal(health.healthy(), true);
      yield* TestClock.adjust(10 * PROBE_INTERVAL_MS);
      assert.equal(state.probes, 0, "no probes while healthy");

      health.failed();
      health.failed(); // another session's failure meanwhile changes nothing
      assert.equal(health.healthy(), false);
      yield* TestClock.adjust(PROBE_INTERVAL_MS - 1);
      assert.equal(state.probes, 0, "the first probe comes after the interval");
      yield* TestClock.adjust(1);
      assert.equal(state.probes, 1);
      yield* TestClock.adjust(2 * PROBE_INTERVAL_MS);
      assert.equal(state.probes, 3, "a failed probe is tried again every interval");
      assert.equal(health.healthy(), false, "unhealthy while probes fail");

      state.broken = false;
      yield* TestClock.adjust(PROBE_INTERVAL_MS);
      assert.equal(state.probes, 4);
      yield* logs("spool.healthy");
      assert.equal(health.healthy(), true);
      assert.deepEqual(logged, ["spool.unhealthy", "spool.healthy"]);
      yield* TestClock.adjust(10 * PROBE_INTERVAL_MS);
      assert.equal(state.probes, 4, "probing stops once healthy");

      health.failed();
      assert.equal(health.healthy(), false, "a later failure counts again");
      yield* TestClock.adjust(PROBE_INTERVAL_MS);
      yield* logs("spool.healthy");
      assert.equal(health.healthy(), true);
      assert.equal(state.probes, 5);
    }),
  ));
