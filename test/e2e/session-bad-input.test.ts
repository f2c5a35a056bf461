// Bad SMTP input gets the RFC's reply and never a crash; SMTP smuggling payloads
// (CVE-2023-51764 family) never end DATA early, so no second message appears.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, readMetric, type TernNode } from "../support/tern-node.ts";
import { openRaw } from "../support/raw-socket.ts";

const baseConfig = (dataDir: string, smtp: Record<string, unknown> = {}) => ({
  nodeId: "guard",
  cluster: uniqueCluster(),
  dataDir,
  localDomains: ["example.test"],
  users: [{ address: "alice@example.test", password: "pw" }],
  trustedNetworks: ["192.0.2.0/24"],
  limits: { maxRecipients: 3, maxMessageBytes: 10_000 },
  smtp,
});

const SMUGGLING_ENDINGS = { "\\n.\\n": "\n.\n", "\\r.\\r": "\r.\r", "\\n.\\r\\n": "\n.\r\n", "\\r\\n.\\n": "\r\n.\n" };

/** A transaction whose DATA hides a second transaction behind a non-standard end of data. */
const smuggle = (ending: string) =>
  "EHLO attacker.test\r\nMAIL FROM:<a@attacker.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n" +
  `Subject: first\r\n\r\nbody one${ending}` +
  "MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n";

const accepted = (node: TernNode) => readMetric(node, "tern_messages_accepted_total");

describe("with bare line endings rejected (the default)", () => {
  let node: TernNode;
  let dataDir: string;
  before(async () => {
    dataDir = await makeDataDir();
    node = await startTernNode(baseConfig(dataDir, { idleTimeoutMs: 1500 }));
  });
  after(async () => {
    await node.kill("SIGTERM");
    await removeDataDir(dataDir);
  });

  for (const [name, ending] of Object.entries(SMUGGLING_ENDINGS)) {
    test(`a smuggling attempt ending DATA with ${name} is refused whole and nothing is queued`, async () => {
      const before = await accepted(node);
      const smtp = await openRaw(node.ports.smtp);
      await smtp.waitFor(/^220 /);
      smtp.send(smuggle(ending));
      const transcript = await smtp.waitFor(/\r\n221 /);
      assert.match(transcript, /\r\n354 [^\r\n]*\r\n550 5\.6\.11 Bare CR or LF in message data is not allowed\r\n221 /);
      assert.doesNotMatch(transcript, /queued as/);
      assert.equal(await accepted(node), before);
    });
  }

  test("NUL bytes in DATA get 554 5.6.0 and the session goes on", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.send("EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    await smtp.waitFor(/354 /);
    smtp.send("Subject: nul\r\n\r\nbad\0byte\r\n.\r\nNOOP\r\n");
    await smtp.waitFor(/554 5\.6\.0 NUL characters are not allowed[^\r\n]*\r\n250 /);
    smtp.close();
  });

  test("a command line over 1000 octets, unknown commands and bad sequences get their replies", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.send(`EHLO c.test\r\nMAIL FROM:<${"a".repeat(1100)}@c.test>\r\n`);
    await smtp.waitFor(/\r\n5\d\d [^\r\n]*\r\n$/);
    smtp.send("XYZZY\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    const transcript = await smtp.waitFor(/500 5\.5\.2 [^\r\n]*\r\n503 5\.5\.1 [^\r\n]*\r\n503 5\.5\.1 /);
    assert.ok(!smtp.closed(), transcript);
    smtp.close();
  });

  test("commands pipelined after a refused RCPT, and DATA with no valid recipient, are refused (503)", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.send("EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\nQUIT\r\n");
    const transcript = await smtp.waitFor(/221 /);
    assert.match(transcript, /250 2\.1\.0 [^\r\n]*\r\n550 5\.1\.1 No such user here\r\n554 5\.7\.1 Relay access denied\r\n503 5\.5\.1 [^\r\n]*need RCPT[^\r\n]*\r\n221 /);
  });

  test("a UTF-8 address needs SMTPUTF8 (553 5.6.7); with it, it is accepted", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.send(Buffer.from("EHLO c.test\r\nMAIL FROM:<josé@c.test>\r\nMAIL FROM:<josé@c.test> SMTPUTF8\r\n", "utf8"));
    await smtp.waitFor(/553 5\.6\.7 Non-ASCII address requires the SMTPUTF8 parameter\r\n250 2\.1\.0 /);
    smtp.close();
  });

  test("a message over the size limit gets 552 5.3.4, announced (SIZE=) or actual", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.send("EHLO c.test\r\nMAIL FROM:<a@c.test> SIZE=20000\r\n");
    await smtp.waitFor(/552 5\.3\.4 /);
    smtp.send("MAIL FROM:<a@c.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    await smtp.waitFor(/354 /);
    smtp.send(`Subject: big\r\n\r\n${"x".repeat(78)}\r\n`.repeat(200) + ".\r\n");
    await smtp.waitFor(/354 [^\r\n]*\r\n552 5\.3\.4 /);
    smtp.close();
  });

  test("a client that talks before the greeting is dropped with 421", async () => {
    const smtp = await openRaw(node.ports.smtp);
    smtp.send("EHLO early.test\r\n");
    await smtp.waitFor(/421 [^\r\n]*talk too soon/);
  });

  test("an idle client is disconnected with 421 4.4.2", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    await smtp.waitFor(/421 4\.4\.2 /, 5000);
  });

  test("8-bit data without BODY=8BITMIME is accepted by default (as Postfix does)", async () => {
    const sent = await run("python3", ["-c", `
import smtplib
s = smtplib.SMTP("127.0.0.1", ${node.ports.smtp}, timeout=10)
s.ehlo("c.test")
s.sendmail("a@c.test", ["alice@example.test"], "Subject: 8bit\\r\\n\\r\\ncaf\\xc3\\xa9\\r\\n".encode("latin-1"))
print("sent")
s.quit()`]);
    assert.equal(sent.code, 0, sent.stderr);
  });

  test("after all that the node is still ready", async () => {
    assert.equal((await fetch(`http://127.0.0.1:${node.ports.http}/readyz`)).status, 200);
    assert.ok((await readMetric(node, "tern_smtp_rejections_total", 'reason="bare-line-ending"')) >= 4);
  });
});

describe("with bare line endings normalised", () => {
  let node: TernNode;
  let dataDir: string;
  before(async () => {
    dataDir = await makeDataDir();
    node = await startTernNode(
      baseConfig(dataDir, { bareLineEndings: "normalize", accept8bitWithoutBodyParameter: false, catchAll: { "example.test": "alice@example.test" } }),
    );
  });
  after(async () => {
    await node.kill("SIGTERM");
    await removeDataDir(dataDir);
  });

  test("a smuggling attempt becomes one message, never two", async () => {
    for (const ending of Object.values(SMUGGLING_ENDINGS)) {
      const before = await accepted(node);
      const smtp = await openRaw(node.ports.smtp);
      await smtp.waitFor(/^220 /);
      smtp.send(smuggle(ending));
      const transcript = await smtp.waitFor(/\r\n221 /);
      assert.equal(transcript.match(/queued as/g)?.length, 1, transcript);
      assert.equal(await accepted(node), before + 1);
    }
  });

  test("more recipients than the limit get 452 4.5.3 (unknown users land in the catch-all)", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.send("EHLO c.test\r\nMAIL FROM:<a@c.test>\r\n" + [1, 2, 3, 4].map((n) => `RCPT TO:<r${n}@example.test>\r\n`).join(""));
    await smtp.waitFor(/(250 2\.1\.5 [^\r\n]*\r\n){3}452 4\.5\.3 /);
    smtp.close();
  });

  test("8-bit data without BODY=8BITMIME is refused with 554 5.6.1 when so configured", async () => {
    const smtp = await openRaw(node.ports.smtp);
    await smtp.waitFor(/^220 /);
    smtp.send(Buffer.from("EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\ncafé\r\n.\r\nMAIL FROM:<a@c.test> BODY=8BITMIME\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\ncafé\r\n.\r\n", "utf8"));
    await smtp.waitFor(/554 5\.6\.1 8-bit message data requires BODY=8BITMIME\r\n[\s\S]*queued as/);
    smtp.close();
  });
});
