// POP3 with STLS on a real node, using the node's own TLS credentials: where plaintext
// login is not allowed, poplib without STLS is refused and with STLS gets the mail;
// curl does STLS and AUTH PLAIN by itself.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";
import { poplibFetch } from "../support/pop3.ts";

let node: TernNode;
let dataDir: string;
const raw = "From: s@elsewhere.test\r\nTo: alice@example.test\r\nSubject: over tls\r\n\r\nsecret words\r\n";

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode({
    nodeId: "solo",
    cluster: uniqueCluster(),
    dataDir,
    localDomains: ["example.test"],
    users: [{ address: "alice@example.test", password: "alice-pw" }],
    pop3: { plaintextLoginNetworks: [] },
  });
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: node.ports.smtp, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope: { from: "s@elsewhere.test", to: "alice@example.test" }, raw });
  transport.close();
  await node.waitForEvent("recipient.delivered", { queueId: /queued as ([0-9A-Za-z]+)/.exec(info.response)![1] });
});

after(async () => {
  await node.kill("SIGTERM");
  await removeDataDir(dataDir);
});

test("poplib: refused without STLS, served after it", { timeout: 60_000 }, async () => {
  assert.deepEqual(await poplibFetch(node.ports.pop3, "alice@example.test", "alice-pw"), {
    error: "-ERR [AUTH] plaintext login is not allowed on this connection: use STLS first",
  });
  const fetched = await poplibFetch(node.ports.pop3, "alice@example.test", "alice-pw", "stls");
  assert.ok("messages" in fetched, JSON.stringify(fetched));
  assert.equal(fetched.messages.length, 1);
  assert.match(fetched.messages[0]!.head, /Subject: over tls/);
});

test("curl pop3:// with --ssl-reqd lists and retrieves", { timeout: 60_000 }, async () => {
  const base = ["--silent", "--show-error", "--ssl-reqd", "--insecure", "--max-time", "10", "--user", "alice@example.test:alice-pw"];
  const listing = await run("curl", [...base, `pop3://127.0.0.1:${node.ports.pop3}/`]);
  assert.equal(listing.code, 0, listing.stderr);
  assert.match(listing.stdout, /^1 \d+\r\n$/);
  const message = await run("curl", [...base, `pop3://127.0.0.1:${node.ports.pop3}/1`]);
  assert.ok(message.stdout.endsWith(raw), JSON.stringify(message.stdout));
  const refused = await run("curl", ["--silent", "--max-time", "10", "--user", "alice@example.test:alice-pw", `pop3://127.0.0.1:${node.ports.pop3}/`]);
  assert.notEqual(refused.code, 0, "without TLS curl must not get in");

  const metrics = await (await fetch(`http://127.0.0.1:${node.ports.http}/metrics`)).text();
  assert.match(metrics, /^tern_pop3_logins_total\{outcome="plaintext-refused"\} [1-9]/m);
  assert.match(metrics, /^tern_pop3_logins_total\{outcome="ok"\} [1-9]/m);
});
