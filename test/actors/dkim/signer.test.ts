// DKIM signing at acceptance, checked by an independent verifier: messages stream through
// the session's ingest into a real spool (LMDB) with the signer in between, are committed,
// and the stored bytes are verified by Debian's dkimpy, which fetches each public key over
// real DNS from dnsmasq's TXT records.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { Effect, Exit } from "effect";
import { loadSigningKeys, type DkimConfig } from "../../../actors/dkim/keys.ts";
import { fromDomain, makeDkimSigner } from "../../../actors/dkim/signer.ts";
import { newMessageId } from "../../../actors/queue/entry.ts";
import { openSpool, type Spool } from "../../../actors/queue/spool.ts";
import { ingest } from "../../../actors/session/ingest.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { makeKey, txtRecord, verifyDkim, type TestKey } from "../../support/dkim.ts";
import { temporaryLmdb } from "../../support/lmdb.ts";

const lmdb = temporaryLmdb("tern-dkim-");
let dir: string;
let dns: RunningDnsmasq;
let rsa: TestKey;
let ed: TestKey;
let rsaNext: TestKey;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tern-dkim-keys-"));
  rsa = await makeKey(dir, "rsa2026", "rsa-sha256");
  ed = await makeKey(dir, "ed2026", "ed25519-sha256");
  rsaNext = await makeKey(dir, "rsa2027", "rsa-sha256");
  dns = await startDnsmasq({
    txt: [txtRecord("rsa.example", rsa), txtRecord("ed.example", ed), txtRecord("rotating.example", rsa), txtRecord("rotating.example", rsaNext)],
  });
});
after(async () => {
  await dns?.stop();
  await rm(dir, { recursive: true, force: true });
});

const keysOf = (config: DkimConfig) => Effect.runPromise(loadSigningKeys(config));

const message = (from: string, body = "Hello,\r\n\r\nthe   body  with  spaces   \r\nand lines.\r\n\r\n\r\n") =>
  `From: Someone <${from}>\r\nTo: friend@remote.example\r\nSubject: signed  at\r\n  acceptance\r\nDate: Sun, 1 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@x>\r\n\r\n${body}`;

/** Streams `text` through ingest and the signer into `spool`, commits it, and returns the stored bytes. */
const acceptSigned = async (spool: Spool, signer: ReturnType<typeof makeDkimSigner>, text: string, envelopeSender: string) => {
  const id = newMessageId(Date.now());
  const stored = spool.openBody(id);
  const signing = signer.start(stored, { envelopeSender, at: Date.now() });
  const stream = new PassThrough();
  const received = ingest(stream, signing.body, { bareLineEndings: "reject", allow8bit: true, prepend: () => `Received: from test by tern.test; Sun, 1 Nov 2026 10:00:00 +0000\r\n` });
  // Small writes at first: the header's end arrives in pieces, as from a socket.
  for (let at = 0; at < text.length; at += at < 1024 ? 7 : 64 * 1024) stream.write(text.slice(at, at + (at < 1024 ? 7 : 64 * 1024)));
  stream.end();
  await received;
  const outcome = await signing.finish();
  await Effect.runPromise(spool.accept({ id, sender: envelopeSender, receivedAt: Date.now(), body: stored, routes: [{ route: { kind: "remote", domain: "remote.example" }, recipients: ["friend@remote.example"] }] }));
  return { outcome, bytes: Buffer.from(spool.body(id)!), id };
};

test("an RSA-SHA256 signature made at acceptance verifies with dkimpy against the key in DNS", async () => {
  const spool = openSpool((await lmdb.fresh()).root);
  const signer = makeDkimSigner(await keysOf({ domains: { "rsa.example": [rsa] } }));
  const { outcome, bytes } = await acceptSigned(spool, signer, message("alice@rsa.example"), "alice@rsa.example");
  assert.deepEqual(outcome, { _tag: "Signed", domain: "rsa.example", selectors: ["rsa2026"] });
  assert.match(bytes.toString("latin1"), /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=rsa\.example;/);
  assert.deepEqual(await verifyDkim(bytes, dns), [{ domain: "rsa.example", selector: "rsa2026", algorithm: "rsa-sha256", ok: true }]);
});

test("an Ed25519-SHA256 signature verifies too", async () => {
  const spool = openSpool((await lmdb.fresh()).root);
  const signer = makeDkimSigner(await keysOf({ domains: { "ed.example": [ed] } }));
  const { bytes } = await acceptSigned(spool, signer, message("bob@ed.example"), "bob@ed.example");
  assert.deepEqual(await verifyDkim(bytes, dns), [{ domain: "ed.example", selector: "ed2026", algorithm: "ed25519-sha256", ok: true }]);
});

test("during a rotation both selectors sign, and both signatures verify", async () => {
  const spool = openSpool((await lmdb.fresh()).root);
  const signer = makeDkimSigner(await keysOf({ domains: { "rotating.example": [rsa, rsaNext] } }));
  const { outcome, bytes } = await acceptSigned(spool, signer, message("carol@rotating.example"), "bounces@other.example");
  assert.deepEqual(outcome, { _tag: "Signed", domain: "rotating.example", selectors: ["rsa2026", "rsa2027"] });
  const checks = await verifyDkim(bytes, dns);
  assert.deepEqual(
    checks.map((c) => [c.selector, c.ok]).sort(),
    [
      ["rsa2026", true],
      ["rsa2027", true],
    ],
  );
});

test("a signed message altered afterwards fails verification (body or a signed header)", async () => {
  const spool = openSpool((await lmdb.fresh()).root);
  const signer = makeDkimSigner(await keysOf({ domains: { "rsa.example": [rsa] } }));
  const { bytes } = await acceptSigned(spool, signer, message("alice@rsa.example"), "alice@rsa.example");
  const text = bytes.toString("latin1");
  const bodyChanged = Buffer.from(text.replace("and lines.", "and lines!"), "latin1");
  const subjectChanged = Buffer.from(text.replace("Subject: signed", "Subject: SIGNED"), "latin1");
  assert.equal((await verifyDkim(bodyChanged, dns))[0]?.ok, false);
  assert.equal((await verifyDkim(subjectChanged, dns))[0]?.ok, false);
  // Relaxed canonicalization forgives what relays do to whitespace: the same message re-spaced still verifies.
  const respaced = Buffer.from(text.replace("the   body  with", "the body with"), "latin1");
  assert.equal((await verifyDkim(respaced, dns))[0]?.ok, true);
});

test("the From header's domain signs; else the envelope sender's; a parent domain's key covers subdomains; none: unsigned", async () => {
  const spool = openSpool((await lmdb.fresh()).root);
  const signer = makeDkimSigner(await keysOf({ domains: { "rsa.example": [rsa], "ed.example": [ed] } }));
  const fromHeader = await acceptSigned(spool, signer, message("x@ed.example"), "bounce@rsa.example");
  assert.deepEqual(fromHeader.outcome, { _tag: "Signed", domain: "ed.example", selectors: ["ed2026"] });
  const envelope = await acceptSigned(spool, signer, message("x@unsigned.example"), "bounce@rsa.example");
  assert.deepEqual(envelope.outcome, { _tag: "Signed", domain: "rsa.example", selectors: ["rsa2026"] });
  assert.equal((await verifyDkim(envelope.bytes, dns))[0]?.ok, true);
  const subdomain = await acceptSigned(spool, signer, message("x@news.rsa.example"), "");
  assert.deepEqual(subdomain.outcome, { _tag: "Signed", domain: "rsa.example", selectors: ["rsa2026"] });
  const none = await acceptSigned(spool, signer, message("x@unsigned.example"), "y@unsigned.example");
  assert.deepEqual(none.outcome, { _tag: "NoKey" });
  assert.match(none.bytes.toString("latin1"), /^Received: /);
});

test("a large body is signed as it streams, and verifies", async () => {
  const spool = openSpool((await lmdb.fresh()).root);
  const signer = makeDkimSigner(await keysOf({ domains: { "ed.example": [ed] } }));
  const body = `${"0123456789 ".repeat(90)}\r\n`.repeat(3000); // ~3 MB, many spool chunks
  const { bytes } = await acceptSigned(spool, signer, message("big@ed.example", body), "big@ed.example");
  assert.ok(bytes.length > 2_900_000);
  assert.equal((await verifyDkim(bytes, dns))[0]?.ok, true);
});

test("fromDomain reads the first address of a folded From field", () => {
  assert.equal(fromDomain("Subject: x\r\nFrom: \"Doe, Jane\"\r\n <jane@Example.ORG>, other@b.example\r\n"), "example.org");
  assert.equal(fromDomain("Subject: x\r\n"), undefined);
});

test("keys are checked at load: a missing file, a non-key, a key of the wrong type, a short RSA key", async () => {
  const failure = async (config: DkimConfig) => {
    const exit = await Effect.runPromiseExit(loadSigningKeys(config));
    assert.ok(Exit.isFailure(exit));
    return String(exit.cause);
  };
  assert.match(await failure({ domains: { "a.example": [{ selector: "s1", algorithm: "rsa-sha256", keyFile: join(dir, "missing.pem") }] } }), /"a\.example".*"s1".*missing\.pem: cannot be read/);
  const notAKey = join(dir, "not-a-key.pem");
  await writeFile(notAKey, "hello\n");
  assert.match(await failure({ domains: { "a.example": [{ selector: "s1", algorithm: "rsa-sha256", keyFile: notAKey }] } }), /not a PEM private key/);
  assert.match(await failure({ domains: { "a.example": [{ ...ed, algorithm: "rsa-sha256" }] } }), /the key is ed25519, but rsa-sha256 needs an rsa key/);
  const { generateKeyPairSync } = await import("node:crypto");
  const short = join(dir, "short.pem");
  await writeFile(short, generateKeyPairSync("rsa", { modulusLength: 768 }).privateKey.export({ type: "pkcs8", format: "pem" }));
  assert.match(await failure({ domains: { "a.example": [{ selector: "s1", algorithm: "rsa-sha256", keyFile: short }] } }), /768 bits is too short/);
  // The key itself never shows in what is logged about the keys.
  const keys = await keysOf({ domains: { "rsa.example": [rsa] } });
  assert.doesNotMatch(JSON.stringify([...keys]), /PRIVATE KEY/);
});
