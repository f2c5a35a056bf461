// The node's logger (nodes/log.ts): pino writing the fixed start of every line (level as a
// label, ISO-8601 UTC time, node, event), the caller's fields after it, one write per
// event-loop turn, and what is pending written at exit. The vocabulary's retired names
// are refused by the compiler (the @ts-expect-error lines fail `tsc` if they compile).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeLog, type Log } from "../../nodes/log.ts";
import { projectRoot, run } from "../support/tern-node.ts";

/** A log whose writes are collected: each write is one batch of lines. */
const collected = () => {
  const writes: string[] = [];
  const log = makeLog("n1", (text) => void writes.push(text));
  const lines = () => writes.join("").split("\n").filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
  return { log, writes, lines };
};

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

test("every line starts with level, time, node and event, then the fields in the order given", async () => {
  const { log, lines } = collected();
  log("message.accepted", { conn: "c1", queueId: "0MX1", sender: "a@example.test", recipients: ["b@example.test"], size: 42 });
  log("node.stopping");
  await nextTurn();
  const [accepted, stopping] = lines();
  assert.deepEqual(Object.keys(accepted!), ["level", "time", "node", "event", "conn", "queueId", "sender", "recipients", "size"]);
  assert.match(String(accepted!.time), ISO_UTC);
  assert.ok(Math.abs(Date.parse(String(accepted!.time)) - Date.now()) < 5_000);
  assert.deepEqual(accepted, { ...accepted, level: "info", node: "n1", event: "message.accepted", recipients: ["b@example.test"], size: 42 });
  assert.deepEqual(stopping, { level: "info", time: stopping!.time, node: "n1", event: "node.stopping" });
});

test("the level is pino's label, chosen by the line's `level` and not repeated; text is `text`, never `msg`", async () => {
  const { log, writes, lines } = collected();
  log("spool.commit.failed", { level: "error", queueId: "0MX2", error: "ENOSPC" });
  log("cluster.member.down", { level: "warn", member: "b" });
  log("drain.waiting", { level: "info", text: "no live, ready peer" });
  await nextTurn();
  assert.deepEqual(lines().map((line) => [line.level, line.event]), [["error", "spool.commit.failed"], ["warn", "cluster.member.down"], ["info", "drain.waiting"]]);
  assert.equal(lines()[2]!.text, "no live, ready peer");
  for (const line of writes.join("").split("\n").filter(Boolean)) {
    assert.equal(line.match(/"level":/g)?.length, 1, line);
    assert.doesNotMatch(line, /"msg":/);
  }
});

test("what a client chose stays inside its field: quotes and line breaks are escaped, one line per event", async () => {
  const { log, writes, lines } = collected();
  log("auth.failed", { protocol: "smtp", conn: "c1", client: "192.0.2.1", user: 'x","client":"198.51.100.1\n{"level":"info"' });
  await nextTurn();
  assert.equal(writes.join("").split("\n").filter(Boolean).length, 1);
  assert.deepEqual([lines()[0]!.client, lines()[0]!.user], ["192.0.2.1", 'x","client":"198.51.100.1\n{"level":"info"']);
});

test("lines of one event-loop turn go out in one write; the next turn's in another", async () => {
  const { log, writes } = collected();
  for (let n = 0; n < 100; n++) log("recipient.delivered", { attempt: n });
  assert.equal(writes.length, 0, "nothing is written inside the turn");
  await nextTurn();
  assert.equal(writes.length, 1);
  assert.equal(writes[0]!.split("\n").filter(Boolean).length, 100);
  log("recipient.delivered", { attempt: 100 });
  await nextTurn();
  assert.equal(writes.length, 2);
});

test("lines still pending when the process exits are written", async () => {
  const script = `
    import { makeLog } from ${JSON.stringify(join(projectRoot, "nodes/log.ts"))};
    const log = makeLog("n1");
    for (let n = 0; n < 3; n++) log("node.stopping", { attempt: n });
    process.exit(0);`;
  const result = await run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script]);
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(result.stdout.trim().split("\n").map((line) => (JSON.parse(line) as { attempt: number }).attempt), [0, 1, 2]);
});

test("the compiler refuses the retired field names and the logger's own", () => {
  const typeChecks = (log: Log) => {
    // @ts-expect-error the queue id is `queueId`
    log("x", { msg: "0MX1" });
    // @ts-expect-error a recipient is `recipient`
    log("x", { rcpt: "a@example.test" });
    // @ts-expect-error the envelope sender is `sender`
    log("x", { from: "a@example.test" });
    // @ts-expect-error a client's address is `client`
    log("x", { remote: "192.0.2.1" });
    // @ts-expect-error `error` or `text`
    log("x", { detail: "why" });
    // @ts-expect-error the logger writes the time
    log("x", { time: 1 });
    // @ts-expect-error one of info, warn, error
    log("x", { level: "debug" });
    log("x", { queueId: "0MX1", recipient: "a@example.test", sender: "", client: "192.0.2.1", error: "why", level: "warn" });
  };
  assert.equal(typeof typeChecks, "function");
});
