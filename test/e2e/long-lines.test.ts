// No line over 1000 octets (998 and CRLF) leaves a node (RFC 5321 §4.5.3.1.6): by default a
// message with a 5000-octet line is refused at DATA (swaks sees 550 5.6.0, and the API a
// BadMessage); with `smtp.longLines: "encode"` it is accepted and folded before it is
// relayed, every character kept.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connectTern, TernApiError, type TernClient } from "../../cluster/client.ts";
import { startDnsmasq, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startSink, type Sink } from "../support/sink.ts";
import { eventually, makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: Sink;
const dirs: string[] = [];
const nodes: TernNode[] = [];
const clusters = { reject: uniqueCluster(), encode: uniqueCluster() };
const started = {} as Record<"reject" | "encode", TernNode>;
let tern: TernClient;

const long = Array.from({ length: 5000 }, (_, n) => String.fromCharCode(97 + (n % 26))).join("");

before(async () => {
  sink = await startSink();
  dns = await startDnsmasq({ mx: [{ domain: "remote.test", host: "mx.remote.test", preference: 10 }], hosts: [{ name: "mx.remote.test", address: "127.0.0.1" }] });
  for (const mode of ["reject", "encode"] as const) {
    const dataDir = await makeDataDir();
    dirs.push(dataDir);
    started[mode] = await startTernNode({
      nodeId: mode,
      cluster: clusters[mode],
      dataDir,
      localDomains: ["example.test"],
      users: [{ address: "user@example.test", password: "pw" }],
      trustedNetworks: ["127.0.0.0/8"],
      dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
      delivery: { remotePort: sink.port, retryBaseMs: 200, retryMaxMs: 1000, pollMs: 50 },
      ...(mode === "encode" ? { smtp: { longLines: "encode" } } : {}),
    });
    nodes.push(started[mode]);
  }
  tern = await connectTern({ cluster: clusters.reject });
});

after(async () => {
  await tern?.close();
  await Promise.all(nodes.map((node) => node.kill("SIGTERM")));
  await Promise.all([sink?.close(), dns?.stop(), ...dirs.map(removeDataDir)]);
});

const sendLong = (node: TernNode, subject: string) =>
  run("swaks", ["--server", "127.0.0.1", "--port", String(node.ports.smtp), "--from", "shop@elsewhere.test", "--to", "r@remote.test", "--header", `Subject: ${subject}`, "--body", `before\n${long}\nafter`]);

test("by default a message with a 5000-octet line is refused at DATA with 550 5.6.0, over SMTP and the API", async () => {
  const sent = await sendLong(started.reject, "refused");
  assert.notEqual(sent.code, 0);
  assert.match(sent.stdout, /<\*\* 550 5\.6\.0 Message has a line longer than 998 octets/);
  await assert.rejects(
    tern.submitRaw(Buffer.from(`Subject: api\r\n\r\n${long}\r\n`), { from: "app@example.test", to: ["r@remote.test"] }),
    (error: unknown) => error instanceof TernApiError && error.code === "BadMessage" && /longer than 998 octets/.test(error.message),
  );
  const short = await run("swaks", ["--server", "127.0.0.1", "--port", String(started.reject.ports.smtp), "--from", "shop@elsewhere.test", "--to", "r@remote.test", "--header", "Subject: fine"]);
  assert.equal(short.code, 0, "a message of short lines still goes");
});

test("with longLines: encode the message is accepted and leaves with no line over 998 octets, every character kept", async () => {
  const sent = await sendLong(started.encode, "folded");
  assert.equal(sent.code, 0, sent.stdout + sent.stderr);
  const mail = await eventually(() => sink.received.find((m) => m.body.toString("latin1").includes("Subject: folded")), 15_000, "the folded message at the sink");
  const text = mail.body.toString("latin1");
  assert.ok(text.split("\r\n").every((line) => line.length <= 998), "a line over 998 octets left the node");
  assert.ok(text.replace(/\r\n /g, "").includes(`before\r\n${long}\r\nafter`), "the long line, unfolded, is all there");
});
