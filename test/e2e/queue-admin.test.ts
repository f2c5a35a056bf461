// `tern queue …` against a running node, over NATS: suspend and resume a destination,
// show an entry's attempts, retry now, bounce by sender (with a DSN), delete by domain;
// one message by the id of its 250 reply: show, hold (across a kill -9), release, retry,
// bounce, delete, with the exit status of each.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { simpleParser } from "mailparser";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { queueCommand } from "../../nodes/queue-command.ts";
import { makeDataDir, projectRoot, removeDataDir, run, sleep, startTernNode, uniqueCluster, eventually, type TernNode, ternCli } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let origin: ScriptedServer;
/** mx.busy.test: one connection at a time, each message answered 5 s after its final dot. */
let busy: ScriptedServer;
let node: TernNode;
let dataDir: string;
let config: Parameters<typeof startTernNode>[0];
const refusedOnce = new Set<string>();

before(async () => {
  origin = await startScriptedSmtp({
    // The first RCPT for each flaky address is deferred; later ones are taken.
    rcpt: (to) => {
      if (!to.endsWith("@flaky.test") || refusedOnce.has(to)) return undefined;
      refusedOnce.add(to);
      return "451 4.3.0 not now";
    },
  });
  busy = await startScriptedSmtp({ dataReplyDelayMs: 5_000 }, origin.port, "127.0.0.2");
  dns = await startDnsmasq({
    mx: ["origin.test", "held.test", "flaky.test", "dead.test", "keep.test", "busy.test"].map((domain) => ({ domain, host: `mx.${domain}`, preference: 10 })),
    hosts: [
      { name: "mx.origin.test", address: "127.0.0.1" },
      { name: "mx.held.test", address: "127.0.0.1" },
      { name: "mx.flaky.test", address: "127.0.0.1" },
      { name: "mx.keep.test", address: "127.0.0.1" },
      { name: "mx.busy.test", address: "127.0.0.2" },
      { name: "mx.dead.test", address: "127.0.0.9" }, // nothing listens there: refused
    ],
  });
  dataDir = await makeDataDir();
  config = {
    nodeId: "admin",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    // A retry an hour away: anything delivered in these tests was asked for.
    delivery: { remotePort: origin.port, retryBaseMs: 3_600_000, retryMaxMs: 3_600_000, pollMs: 50, connectTimeoutMs: 1000, holdMs: 100, siteConnections: { "mx.busy.test": 1 } },
  };
  node = await startTernNode(config);
});

after(async () => {
  await node?.kill("SIGTERM");
  await origin?.close();
  await busy?.close();
  await Promise.all([dns?.stop(), removeDataDir(dataDir)]);
});

/**
 * `tern queue …` in this process (a CLI process costs a start-up each time), asking the
 * node by name, or with "--all" first every node, as without --node.
 */
const queue = async (...args: string[]) => {
  let stdout = "";
  let stderr = "";
  const all = args[0] === "--all";
  const rest = all ? args.slice(1) : args;
  const code = await queueCommand(["--config", join(dataDir, "config-admin.json"), ...(all || rest.includes("--node") ? [] : ["--node", "admin"]), ...rest], { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) }).catch(
    (error: Error) => {
      stderr += error.message;
      return 78;
    },
  );
  return { code, stdout, stderr, json: () => JSON.parse(stdout) };
};

const send = async (from: string, to: string, subject: string) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope: { from, to: [to] }, raw: `From: ${from}\r\nSubject: ${subject}\r\n\r\nbody\r\n` });
  transport.close();
  return /queued as ([0-9A-Z]+)/.exec(info.response)![1]!;
};

const arrived = (to: string) => origin.accepted.filter((m) => m.to.some((t) => t.address === to));

test("a suspended destination keeps its mail queued (qshape and list show it) until it is resumed", async () => {
  const suspended = await queue("suspend", "held.test");
  assert.equal(suspended.code, 0, suspended.stderr);
  assert.match(suspended.stdout, /held\.test suspended/);
  const queueId = await send("s@origin.test", "u@held.test", "held");
  await sleep(800);
  assert.equal(arrived("u@held.test").length, 0, "nothing goes to a suspended destination");
  const shape = await queue("shape");
  assert.equal(shape.code, 0, shape.stderr);
  assert.match(shape.stdout, /\(suspended\) held\.test\s+1\s+1/);
  const listed = (await queue("list", "--domain", "held.test", "--json")).json();
  assert.equal(listed.entries.length, 1);
  assert.equal(listed.entries[0].id, `${queueId}.0`);
  assert.equal(listed.entries[0].suspended, true);
  assert.equal((await queue("resume", "held.test")).code, 0);
  await eventually(() => (arrived("u@held.test").length === 1 ? true : undefined), 10_000, "delivery after resume");
});

test("show lists every attempt with host, address, reply and requeue reason; retry makes a deferred entry go now", async () => {
  const queueId = await send("s@origin.test", "x@flaky.test", "flaky");
  await node.waitForEvent("recipient.deferred", { queueId });
  const [shown] = (await queue("show", `${queueId}.0`, "--json")).json().entries;
  assert.equal(shown.attempts, 1);
  assert.equal(shown.reason, "temporary-reply");
  assert.ok(shown.nextAttemptAt > Date.now() + 30 * 60_000, "the next attempt is far away");
  assert.deepEqual(
    { mx: shown.history[0].mx, ip: shown.history[0].ip, requeued: shown.history[0].requeued, result: shown.history[0].results[0].result },
    { mx: "mx.flaky.test", ip: "127.0.0.1", requeued: "temporary-reply", result: { _tag: "Reply", code: 451, enhanced: "4.3.0", text: "not now" } },
  );
  const text = await queue("show", `${queueId}.0`);
  assert.match(text.stdout, /mx\.flaky\.test\[127\.0\.0\.1\] requeued: temporary-reply\n\s+x@flaky\.test deferred \(other\): 451 4\.3\.0 not now/);
  const retried = await queue("retry", "--domain", "flaky.test");
  assert.equal(retried.code, 0, retried.stderr);
  assert.match(retried.stdout, /1 entries \(1 recipients\) changed/);
  await node.waitForEvent("recipient.delivered", { queueId }, 10_000);
  assert.equal(arrived("x@flaky.test").length, 1);
});

test("bounce by sender fails the entries now with a DSN; delete by domain removes them without one", async () => {
  const bounced = await send("bob@origin.test", "y@dead.test", "to bounce");
  const deleted = await send("carol@origin.test", "z@dead.test", "to delete");
  await node.waitForEvent("recipient.deferred", { queueId: bounced });
  await node.waitForEvent("recipient.deferred", { queueId: deleted });

  const bounce = await queue("bounce", "--sender", "bob@origin.test", "--reason", "cleanup after outage");
  assert.equal(bounce.code, 0, bounce.stderr);
  assert.match(bounce.stdout, /1 entries \(1 recipients\) changed, 0 in flight passed over, 1 DSNs queued/);
  const dsn = await eventually(() => arrived("bob@origin.test").find((m) => m.from === ""), 10_000, "the DSN for bob");
  const parsed = await simpleParser(dsn.body, { keepDeliveryStatus: true });
  const status = parsed.attachments.find((a) => a.contentType === "message/delivery-status")!.content.toString();
  assert.match(status, /Final-Recipient: rfc822; y@dead\.test\r\nAction: failed\r\nStatus: 5\.0\.0/);
  assert.match(status, /Diagnostic-Code: x-tern; 5\.0\.0 returned by the mail system administrator: cleanup after outage\r\n/);

  const del = await queue("delete", "--domain", "dead.test");
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /1 entries \(1 recipients\) changed/);
  assert.match((await queue("list", "--domain", "dead.test")).stdout, /no entries/);
  await sleep(500);
  assert.equal(arrived("carol@origin.test").length, 0, "no DSN for a deletion");
  await node.waitForEvent("queue.deleted", { queueId: deleted });
});

test("the tern CLI runs queue commands: qshape of the running node; usage errors and unknown nodes exit non-zero", async () => {
  const cli = (...args: string[]) => run(process.execPath, [...ternCli, "queue", "--config", join(dataDir, "config-admin.json"), ...args]);
  const shape = await cli("shape"); // every node of the cluster: here, one
  assert.equal(shape.code, 0, shape.stderr);
  assert.match(shape.stdout, /^node admin: \d+ entries in \d+ queues, \d+ in flight/);
  assert.match(shape.stdout, /TOTAL/);
  const usage = await cli("bounce");
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /needs a message id, --domain or --sender/);
  const nobody = await queue("--node", "ghost", "--timeout", "500", "shape");
  assert.notEqual(nobody.code, 0);
});

test("by the id of its 250 reply: a held message is never delivered, also after kill -9 and a restart, until released", async () => {
  assert.equal((await queue("suspend", "keep.test")).code, 0); // it waits for the hold, not delivered first
  const id = await send("s@origin.test", "k@keep.test", "kept");
  const held = await queue("hold", id);
  assert.equal(held.code, 0, held.stderr);
  assert.match(held.stdout, new RegExp(`node admin: ${id}\\.0 held`));
  assert.equal((await queue("hold", id)).code, 75, "held already: nothing changed");
  assert.equal((await queue("retry", id)).code, 75, "a retry leaves it held");
  assert.equal((await queue("resume", "keep.test")).code, 0);
  await sleep(800);
  assert.equal(arrived("k@keep.test").length, 0, "held: not delivered though its queue is resumed");

  await node.kill("SIGKILL");
  node = await startTernNode(config);
  // Asked of every node (no --node): the member list says when all have answered.
  const shown = await queue("--all", "show", id);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, new RegExp(`${id}\\.0 keep\\.test \\(held since \\S+\\) from <s@origin\\.test> to k@keep\\.test attempts=0 next=held reason=held`));
  await sleep(800);
  assert.equal(arrived("k@keep.test").length, 0, "still held after the restart");

  const released = await queue("release", id);
  assert.equal(released.code, 0, released.stderr);
  assert.match(released.stdout, /released, due now/);
  await node.waitForEvent("recipient.delivered", { queueId: id }, 10_000);
  assert.equal(arrived("k@keep.test").length, 1);
  assert.equal((await queue("release", id)).code, 1, "delivered: no queue entry left");
});

test("by id, a message waiting for its site's one connection: a hold stops it before it is sent, and a release sends it", async () => {
  const first = await send("s@origin.test", "one@busy.test", "takes the connection");
  await eventually(() => busy.finished.length === 1 || undefined, 10_000, "the first message's final dot at mx.busy.test");
  const second = await send("s@origin.test", "two@busy.test", "waits for the connection");
  const held = await queue("hold", second);
  assert.equal(held.code, 0, held.stderr);
  assert.match(held.stdout, new RegExp(`node admin: ${second}\\.0 held$`, "m"), "held before its transaction: it will not be sent");

  await node.waitForEvent("recipient.delivered", { queueId: first }, 20_000);
  await node.waitForEvent("recipient.deferred", { queueId: second }, 10_000);
  await sleep(500);
  assert.deepEqual(busy.commands.filter((c) => c.startsWith("RCPT")), ["RCPT TO:<one@busy.test>"], "the held message never reached the host");
  const shown = await queue("show", second);
  assert.match(shown.stdout, new RegExp(`${second}\\.0 busy\\.test \\(held since \\S+\\) from <s@origin\\.test> to two@busy\\.test attempts=0 next=held reason=held`));

  assert.equal((await queue("release", second)).code, 0);
  await node.waitForEvent("recipient.delivered", { queueId: second }, 20_000);
  assert.deepEqual(busy.accepted.map((m) => m.to[0]!.address), ["one@busy.test", "two@busy.test"]);
});

test("by id: show, retry, bounce and delete one message; an unknown id exits 1, a malformed one 2, a release of a message not held 75", async () => {
  const flaky = await send("s@origin.test", "w@flaky.test", "retry me");
  await node.waitForEvent("recipient.deferred", { queueId: flaky });
  const retried = await queue("retry", flaky);
  assert.equal(retried.code, 0, retried.stderr);
  assert.match(retried.stdout, new RegExp(`${flaky}\\.0 due now`));
  await node.waitForEvent("recipient.delivered", { queueId: flaky }, 10_000);

  const bounced = await send("dave@origin.test", "v@dead.test", "bounce me");
  const deleted = await send("erin@origin.test", "u@dead.test", "delete me");
  await node.waitForEvent("recipient.deferred", { queueId: bounced });
  await node.waitForEvent("recipient.deferred", { queueId: deleted });
  assert.equal((await queue("release", deleted)).code, 75, "not held: nothing changed");
  const bounce = await queue("bounce", bounced, "--reason", "by id");
  assert.equal(bounce.code, 0, bounce.stderr);
  assert.match(bounce.stdout, /bounced\nnode admin: 1 DSN queued/);
  await eventually(() => arrived("dave@origin.test").find((m) => m.from === ""), 10_000, "the DSN for dave");
  const del = await queue("delete", `${deleted}.0`);
  assert.equal(del.code, 0, del.stderr);
  await node.waitForEvent("queue.deleted", { queueId: deleted });
  assert.equal(arrived("erin@origin.test").length, 0, "no DSN for a deletion");

  const unknown = await queue("show", "0NOSUCHMESSAGE000");
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no queue entry of 0NOSUCHMESSAGE000 on any of the 1 node that answered/);
  assert.equal((await queue("delete", deleted)).code, 1, "deleted already");
  const malformed = await queue("show", "not/an/id");
  assert.equal(malformed.code, 2);
  assert.equal((await queue("hold", flaky, "--domain", "flaky.test")).code, 2, "an id and a selection at once");
});
