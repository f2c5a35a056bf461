import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect, Schema } from "effect";
import { spawnActor, restartDelayMs, type RestartPolicy } from "../../../actors/runtime/actor.ts";
import { makeSupervisor } from "../../../actors/runtime/supervisor.ts";

class Odd extends Schema.TaggedError<Odd>()("Odd", { n: Schema.Number }) {}

const fastRestarts: RestartPolicy = { baseDelayMs: 1, maxDelayMs: 5, maxRestarts: 3, windowMs: 60_000 };
const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.result(effect));

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
  const gate = new Promise<void>((resolve) => (release = resolve));
  const actor = await Effect.runPromise(
    spawnActor<number, void, never>(
      { name: "slow", capacity: 2, init: Effect.succeed(() => Effect.promise(() => gate)) },
      makeSupervisor(),
    ),
  );
  await Effect.runPromise(actor.tell(1)); // taken by the worker, blocks on the gate
  await new Promise((r) => setTimeout(r, 10));
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

test("exceeding the restart budget escalates and stops the actor", async () => {
  const supervisor = makeSupervisor();
  const actor = await Effect.runPromise(
    spawnActor<string, string, never>(
      { name: "doomed", capacity: 10, restart: fastRestarts, init: Effect.succeed(() => Effect.die("always")) },
      supervisor,
    ),
  );
  for (let i = 0; i < 4; i++) await run(actor.ask("x", 1000));
  assert.deepEqual([...supervisor.escalated().keys()], ["doomed"]);
  const refused = await run(actor.ask("x", 1000));
  assert.equal(refused._tag === "Failure" && refused.failure._tag, "ActorStopped");
});

test("ask times out with AskTimeout", async () => {
  const actor = await Effect.runPromise(
    spawnActor<string, string, never>({ name: "mute", capacity: 1, init: Effect.succeed(() => Effect.never) }, makeSupervisor()),
  );
  const timedOut = await run(actor.ask("x", 20));
  assert.equal(timedOut._tag === "Failure" && timedOut.failure._tag, "AskTimeout");
  await Effect.runPromise(actor.stop(0));
});

test("restart delays grow exponentially, are capped and jittered", () => {
  assert.equal(restartDelayMs(fastRestarts, 0, 1), 1);
  assert.equal(restartDelayMs({ ...fastRestarts, baseDelayMs: 100, maxDelayMs: 1000 }, 2, 1), 400);
  assert.equal(restartDelayMs({ ...fastRestarts, baseDelayMs: 100, maxDelayMs: 1000 }, 9, 1), 1000);
  assert.equal(restartDelayMs({ ...fastRestarts, baseDelayMs: 100, maxDelayMs: 1000 }, 9, 0), 500);
});
