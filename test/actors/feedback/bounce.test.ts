// Bounces as hosts write them, read into values: the RFC 3464 report, Postfix's,
// Microsoft 365's, Exim's and qmail's, and what is no bounce (an out-of-office reply, a
// person's answer).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readBounce, type BounceReading } from "../../../actors/feedback/bounce.ts";
import { readReport } from "../../../actors/feedback/report.ts";
import { makeClassifier } from "../../../actors/delivery/classify.ts";
import { eximBounce, exchangeBounce, outOfOffice, postfixBounce, qmailBounce, rfc3464Report } from "./samples.ts";

const verp = "b-0mx3ol97apeodpeca-aaaaaaaa@bounces.example.org";
const read = async (text: string) => readBounce(await readReport(Buffer.from(text)));
const bounce = (reading: BounceReading) => {
  assert.equal(reading._tag, "Bounce");
  return reading as Extract<BounceReading, { _tag: "Bounce" }>;
};
const classify = makeClassifier();
const categoryOf = (reply: Parameters<typeof classify>[0]) => classify(reply);

test("an RFC 3464 report: each recipient's action, status, quoted reply and remote MTA, and the reporting MTA", async () => {
  const reading = bounce(await read(rfc3464Report(verp, "carol@relay.test", "dave@relay.test")));
  assert.equal(reading.format, "dsn");
  assert.equal(reading.reportingMta, "mx.example.net");
  assert.deepEqual(reading.recipients.map((r) => [r.addresses, r.action, r.status]), [
    [["carol@relay.test"], "failed", "5.1.1"],
    [["dave@relay.test"], "delayed", "4.4.1"],
  ]);
  assert.deepEqual(reading.recipients[0]!.reply, { _tag: "Reply", code: 550, enhanced: "5.1.1", text: "<carol@relay.test>... User unknown" });
  assert.equal(reading.recipients[0]!.remoteMta, "mailbox.example.net");
  assert.equal(categoryOf(reading.recipients[0]!.reply), "bad-mailbox");
});

test("Postfix's bounce is read from its delivery-status part, its Auto-Submitted header notwithstanding", async () => {
  const reading = bounce(await read(postfixBounce(verp, "carol@relay.test")));
  assert.equal(reading.format, "dsn");
  assert.equal(reading.reportingMta, "mail.example.net");
  const [carol] = reading.recipients;
  assert.deepEqual([carol!.addresses, carol!.action, carol!.status, carol!.reply.code, carol!.reply.enhanced], [["carol@relay.test"], "failed", "5.1.1", 550, "5.1.1"]);
  assert.match(carol!.reply.text, /User unknown in local recipient table/);
  assert.equal(categoryOf(carol!.reply), "bad-mailbox");
});

test("Microsoft 365's non-delivery report: 5.1.10 RecipientNotFound is a bad mailbox", async () => {
  const reading = bounce(await read(exchangeBounce(verp, "dave@contoso.test")));
  assert.equal(reading.reportingMta, "DM6PR12MB4321.namprd12.prod.outlook.com");
  const [dave] = reading.recipients;
  assert.deepEqual([dave!.addresses, dave!.action, dave!.status], [["dave@contoso.test"], "failed", "5.1.10"]);
  assert.equal(dave!.reply.text, "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup");
  assert.equal(categoryOf(dave!.reply), "bad-mailbox");
});

test("Exim's plain-text bounce: the SMTP reply in its text, the failed address from X-Failed-Recipients", async () => {
  const reading = bounce(await read(eximBounce(verp, "carol@relay.test")));
  assert.equal(reading.format, "text");
  const [carol] = reading.recipients;
  assert.equal(carol!.addresses[0], "carol@relay.test");
  assert.deepEqual([carol!.action, carol!.status, carol!.reply], ["failed", "5.2.2", { _tag: "Reply", code: 550, enhanced: "5.2.2", text: "Mailbox full" }]);
  assert.equal(categoryOf(carol!.reply), "quota");
});

test("qmail's failure notice: the status code in its text", async () => {
  const reading = bounce(await read(qmailBounce(verp, "carol@relay.test")));
  const [carol] = reading.recipients;
  assert.ok(carol!.addresses.includes("carol@relay.test"));
  assert.deepEqual([carol!.action, carol!.status, carol!.reply.code, carol!.reply.enhanced], ["failed", "5.1.1", 550, "5.1.1"]);
  assert.equal(categoryOf(carol!.reply), "bad-mailbox");
});

test("an out-of-office reply and a person's answer are no bounces, whatever numbers they hold", async () => {
  assert.deepEqual(await read(outOfOffice(verp)), { _tag: "AutoReply" });
  const reply = ["From: Carol <carol@relay.test>", `To: ${verp}`, "Subject: Re: December news", "", "Room 550 at 5.1.1 o'clock?", ""].join("\r\n");
  assert.deepEqual(await read(reply), { _tag: "NotABounce" });
});
