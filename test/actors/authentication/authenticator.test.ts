// One message's checks, fed as the session feeds them (in pieces, as they arrive), with the
// node's resolver against real DNS servers: dnsmasq publishing a sender's SPF, DKIM key and
// DMARC policy, and a silent server, which must not hold a verdict past the timeout.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { Effect } from "effect";
import { dkimSign } from "mailauth/lib/dkim/sign.js";
import type { DKIMSignOptions } from "mailauth";
import { makeInboundAuthenticator, type InboundConfig } from "../../../actors/authentication/authenticator.ts";
import { makeDnsClient } from "../../../actors/resolver/dns-client.ts";
import { recordsFrom } from "../../../actors/resolver/records.ts";
import { startDnsmasq, type RunningDnsmasq } from "../../support/dnsmasq.ts";
import { startScriptedDns, type ScriptedDns } from "../../support/fake-dns.ts";

const config: InboundConfig = { authservId: "mx.tern.test", timeoutMs: 2_000, maxHeaderBytes: 256 * 1024, dmarc: {} };
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const keyRecord = `v=DKIM1; k=rsa; p=${publicKey.export({ type: "spki", format: "der" }).toString("base64")}`;

const authenticatorAt = (server: { host: string; port: number }, overrides: Partial<InboundConfig> = {}, dnsTimeoutMs = 500) =>
  makeInboundAuthenticator({ ...config, ...overrides }, { records: recordsFrom(makeDnsClient({ servers: [server], timeoutMs: dnsTimeoutMs, tries: 2 })), run: Effect.runPromise });

const sign = async (message: string) => {
  const options = { canonicalization: "relaxed/relaxed", signatureData: [{ signingDomain: "sender.test", selector: "s1", privateKey: privateKey.export({ type: "pkcs8", format: "pem" }) }] } as unknown as DKIMSignOptions;
  return (await dkimSign(message, options)).signatures + message;
};

/** Feeds `message` in small pieces, waiting whenever asked to, then finishes. */
const verdictFor = async (authenticator: ReturnType<typeof authenticatorAt>, message: string, client = { ip: "127.0.0.1", helo: "client.sender.test", sender: "bounces@sender.test" }) => {
  const verification = authenticator.start(client);
  const bytes = Buffer.from(message, "latin1");
  for (let at = 0; at < bytes.length; at += 7) await verification.write(bytes.subarray(at, at + 7));
  return Effect.runPromise(verification.finish);
};

describe("against dnsmasq", () => {
  let dnsmasq: RunningDnsmasq;
  before(async () => {
    dnsmasq = await startDnsmasq({
      txt: [
        { name: "sender.test", strings: ["v=spf1 ip4:127.0.0.1 -all"] },
        { name: "s1._domainkey.sender.test", strings: keyRecord.match(/.{1,255}/g)! },
        { name: "_dmarc.sender.test", strings: ["v=DMARC1; p=reject"] },
      ],
    });
  });
  after(() => dnsmasq.stop());

  test("a signed message from an allowed address passes SPF, DKIM and DMARC", async () => {
    const message = await sign(`From: news@sender.test\r\nSubject: hi\r\n\r\n${"A body line.\r\n".repeat(500)}`);
    const verdict = await verdictFor(authenticatorAt(dnsmasq), message);
    assert.equal(verdict.spf, "pass");
    assert.deepEqual(verdict.dkim, ["pass"]);
    assert.equal(verdict.arc, "none");
    assert.deepEqual(verdict.dmarc, { result: "pass", policy: "reject", domain: "sender.test", severalAuthors: false });
    assert.match(verdict.rows.join("; "), /spf=pass \(mx\.tern\.test: domain of bounces@sender\.test designates 127\.0\.0\.1/);
  });

  test("a body changed after signing does not pass DKIM, and, from another address, DMARC with the sender's policy", async () => {
    const message = (await sign("From: news@sender.test\r\nSubject: hi\r\n\r\nPay 10.\r\n")).replace("Pay 10.", "Pay 99.");
    const verdict = await verdictFor(authenticatorAt(dnsmasq), message, { ip: "192.0.2.9", helo: "elsewhere.test", sender: "bounces@sender.test" });
    assert.equal(verdict.spf, "fail");
    assert.deepEqual(verdict.dkim, ["neutral"], "mailauth's word for a body hash that does not verify");
    assert.deepEqual(verdict.dmarc, { result: "fail", policy: "reject", domain: "sender.test", severalAuthors: false });
  });

  test("two From fields make DMARC unevaluable, marked as several authors", async () => {
    const verdict = await verdictFor(authenticatorAt(dnsmasq), "From: news@sender.test\r\nFrom: ceo@bank.test\r\n\r\nx\r\n");
    assert.equal(verdict.dmarc.result, "permerror");
    assert.equal(verdict.dmarc.severalAuthors, true);
  });

  test("an abandoned message ends its checks quietly", async () => {
    const verification = authenticatorAt(dnsmasq).start({ ip: "127.0.0.1", helo: "x", sender: "" });
    await verification.write(Buffer.from("From: a@sender.test\r\n"));
    verification.abandon();
    assert.equal(verification.write(Buffer.from("more\r\n")), undefined);
    await new Promise((resolve) => setTimeout(resolve, 100)); // an unhandled rejection would fail the test run
  });
});

describe("against a DNS server that never answers", () => {
  let silent: ScriptedDns;
  before(async () => {
    silent = await startScriptedDns(() => "drop");
  });
  after(() => silent.stop());

  test("the verdict comes within the timeout (and its grace), every method temperror, though each query could wait 10 s", async () => {
    const started = Date.now();
    const verdict = await verdictFor(authenticatorAt(silent, { timeoutMs: 300 }, 5_000), "From: news@sender.test\r\nSubject: hi\r\n\r\nbody\r\n");
    const took = Date.now() - started;
    assert.ok(took < 4_000, `${took} ms`);
    assert.equal(verdict.spf, "temperror");
    assert.equal(verdict.dmarc.result, "temperror");
  });
});
