// `tern status ID` against two nodes of one cluster: mail accepted by node A, asked about
// with node B's config, is found on A; a recipient deferred (451) shows its attempt and
// next try, then delivered with the MX that took it; one refused (550) shows bounced with
// the reply; A forgets finished messages after status.keepFinishedMs; an unknown id exits 1.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { connect } from "@nats-io/transport-node";
import { makeSubjects } from "../../protocol/subjects.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { statusCommand } from "../../nodes/status-command.ts";
import type { StatusReply } from "../../protocol/status.ts";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, startTernNode, uniqueCluster, type TernNode, ternCli } from "../support/tern-node.ts";

/** Finished messages are forgotten this long after their last change (short, so the test sees it). */
const KEEP_FINISHED_MS = 2_000;
const cluster = uniqueCluster();

let dns: RunningDnsmasq;
let sink: ScriptedServer;
let nodeA: TernNode;
let nodeB: TernNode;
let dirA: string;
let dirB: string;
/** While false, the sink defers flaky.test's recipients. */
let letThrough = false;

before(async () => {
  sink = await startScriptedSmtp({
    rcpt: (to) => {
      if (to.startsWith("nobody@")) return "550 5.1.1 no such user";
      if (to.endsWith("@flaky.test") && !letThrough) return "451 4.3.0 not now";
      return undefined;
    },
  });
  dns = await startDnsmasq({
    mx: ["flaky.test", "origin.test"].map((domain) => ({ domain, host: `mx.${domain}`, preference: 10 })),
    hosts: [
      { name: "mx.flaky.test", address: "127.0.0.1" },
      { name: "mx.origin.test", address: "127.0.0.1" },
    ],
  });
  [dirA, dirB] = await Promise.all([makeDataDir(), makeDataDir()]);
  const common = {
    cluster,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "pw" }],
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, retryBaseMs: 300, retryMaxMs: 300, holdMs: 50, pollMs: 50, connectTimeoutMs: 1000 },
  };
  [nodeA, nodeB] = await Promise.all([
    startTernNode({ ...common, nodeId: "a", dataDir: dirA, status: { keepFinishedMs: KEEP_FINISHED_MS } }),
    startTernNode({ ...common, nodeId: "b", dataDir: dirB }),
  ]);
});

after(async () => {
  await Promise.all([nodeA?.kill("SIGTERM"), nodeB?.kill("SIGTERM")]);
  await sink?.close();
  await Promise.all([dns?.stop(), removeDataDir(dirA), removeDataDir(dirB)]);
});

/** `tern status` with node B's config, in this process (a CLI process costs a second of start-up). */
const status = async (...args: string[]) => {
  let stdout = "";
  let stderr = "";
  const code = await statusCommand(["--config", join(dirB, "config-b.json"), ...args], { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr, json: () => JSON.parse(stdout) as StatusReply };
};

const send = async (to: string[]) => {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: nodeA.ports.smtp, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ envelope: { from: "app@origin.test", to }, raw: "From: app@origin.test\r\nSubject: status\r\n\r\nbody\r\n" });
    return /queued as ([0-9A-Z]+)/.exec(info.response)![1]!;
  } finally {
    transport.close();
  }
};

const recipient = (reply: StatusReply, address: string) => reply.recipients.find((r) => r.recipient === address)!;

test("a message accepted by A is found from B: deferred with its attempt, bounced with the reply, then delivered by the MX; later forgotten", async () => {
  const id = await send(["ok@flaky.test", "nobody@flaky.test"]);
  const deferred = await eventually(async () => {
    const answer = await status(id, "--json");
    assert.equal(answer.code, 0, answer.stderr);
    const reply = answer.json();
    return recipient(reply, "ok@flaky.test").state === "deferred" ? reply : undefined;
  }, 15_000, "the first attempt");
  assert.equal(deferred.message.node, "a", "the node holding the message answers");
  assert.equal(deferred.message.sender, "app@origin.test");
  assert.equal(deferred.message.state, "pending");
  const ok = recipient(deferred, "ok@flaky.test");
  assert.ok(ok.attempts >= 1 && ok.nextAttemptAt !== undefined);
  assert.deepEqual(
    { mx: ok.history[0]!.mx, ip: ok.history[0]!.ip, status: ok.history[0]!.status, result: ok.history[0]!.result },
    { mx: "mx.flaky.test", ip: "127.0.0.1", status: "deferred", result: { _tag: "Reply", code: 451, enhanced: "4.3.0", text: "not now" } },
  );
  const nobody = recipient(deferred, "nobody@flaky.test");
  assert.equal(nobody.state, "bounced");
  assert.equal(nobody.history.at(-1)!.reply, "550 5.1.1 no such user");

  const text = await status(id);
  assert.match(text.stdout, new RegExp(`^message ${id} on node a: pending`));
  assert.match(text.stdout, /ok@flaky\.test: deferred next attempt \S+, \d+ attempts?, temporary-reply/);
  assert.match(text.stdout, /mx\.flaky\.test\[127\.0\.0\.1\] deferred \(other\): 451 4\.3\.0 not now/);
  assert.match(text.stdout, /nobody@flaky\.test: bounced at \S+, 1 attempt \(queue flaky\.test, entry \w+\.0\)\n\s+\S+ mx\.flaky\.test\[127\.0\.0\.1\] failed \(bad-mailbox\): 550 5\.1\.1 no such user/);

  letThrough = true;
  const delivered = await eventually(async () => {
    const reply = (await status(id, "--json")).json();
    return recipient(reply, "ok@flaky.test").state === "delivered" ? reply : undefined;
  }, 15_000, "delivery");
  assert.equal(delivered.message.state, "partial");
  const last = recipient(delivered, "ok@flaky.test").history.at(-1)!;
  assert.deepEqual([last.mx, last.status, last.result._tag], ["mx.flaky.test", "delivered", "Reply"]);
  assert.ok(recipient(delivered, "ok@flaky.test").finishedAt! >= last.at);

  // Gone from A's spool, the finished record answers until status.keepFinishedMs has passed.
  const forgotten = await eventually(async () => {
    const answer = await status(id);
    return answer.code === 1 ? answer : undefined;
  }, KEEP_FINISHED_MS * 3, "the finished record to be pruned");
  assert.match(forgotten.stderr, new RegExp(`message ${id} not found \\(2 nodes of cluster \\S+ answered\\)`));
});

test("a lookup that is no status request gets a malformed answer from every node, which go on answering", async () => {
  const nc = await connect({ servers: ["nats://127.0.0.1:4222"], name: "tern-test-status-garbage" });
  try {
    const subject = makeSubjects(cluster).statusLookup;
    for (const payload of [Buffer.from("garbage"), encodeFrame({ messageId: "../../etc" }), encodeFrame({ nope: 1 })]) {
      const answers = [];
      for await (const msg of await nc.requestMany(subject, payload, { strategy: "stall", stall: 300, maxWait: 5_000 })) answers.push(decodeFrame(msg.data));
      assert.equal(answers.length, 2, "both nodes answer");
      for (const answer of answers) assert.ok(typeof answer !== "string" && typeof (answer.json as { malformed?: unknown }).malformed === "string");
    }
  } finally {
    await nc.close();
  }
  const still = await status("0000000000NOSUCH");
  assert.equal(still.code, 1, still.stderr);
});

test("tern status exits non-zero with a clear message for an unknown id or a malformed one", async () => {
  const cli = (...args: string[]) => run(process.execPath, [...ternCli, "status", "--config", join(dirB, "config-b.json"), ...args]);
  const unknown = await cli("0000000000NOSUCH");
  assert.equal(unknown.code, 1, unknown.stderr);
  assert.match(unknown.stderr, /^tern: message 0000000000NOSUCH not found \(2 nodes of cluster \S+ answered\)/);
  const malformed = await status("../etc");
  assert.equal(malformed.code, 2);
  assert.match(malformed.stderr, /"\.\.\/etc" is not a message id/);
});
