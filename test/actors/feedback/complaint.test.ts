// Feedback reports (ARF, RFC 5965) read into values: the RFC's own example with Tern's
// header in the returned message, and what is no complaint report.
import { test } from "node:test";
import assert from "node:assert/strict";
import { COMPLAINT_TYPES, readComplaint } from "../../../actors/feedback/complaint.ts";
import { readReport } from "../../../actors/feedback/report.ts";
import { arfReport, postfixBounce } from "./samples.ts";

const read = async (text: string) => readComplaint(await readReport(Buffer.from(text)));

test("RFC 5965's example report: type, reporter, arrival, source IP, envelope, and the returned message's X-Tern-Id, Return-Path and recipients", async () => {
  const report = arfReport("fbl@example.org", {
    mailFrom: "b-0mx3ol97apeodpeca-aaaaaaaa@bounces.example.org",
    rcptTo: "User@Example.com",
    headers: [
      "Return-Path: <b-0mx3ol97apeodpeca-aaaaaaaa@bounces.example.org>",
      "Received: from mailserver.example.net (mailserver.example.net",
      "        [192.0.2.1]) by example.com with ESMTP id M63d4137594e46;",
      "        Thu, 08 Mar 2005 14:00:00 -0400",
      "X-Tern-Id: 0mx3ol97apeodpeca-bbbbbbbb",
      "From: <somespammer@example.net>",
      "To: <user@example.com>, Other <other@example.com>",
      "Subject: Earn money",
      "X-Tern-Id: 0mx3ol97apeodpeca-cccccccc",
    ],
  });
  const complaint = await read(report);
  assert.ok(complaint);
  assert.equal(complaint.feedbackType, "abuse");
  assert.equal(complaint.userAgent, "SomeGenerator/1.0");
  assert.equal(complaint.reportedBy, "abusedesk@example.com");
  assert.equal(complaint.reportingMta, "mail.example.com");
  assert.equal(complaint.sourceIp, "192.0.2.1");
  assert.equal(complaint.arrivalDate, Date.parse("2005-03-08T18:00:00Z"));
  assert.equal(complaint.originalMailFrom, "b-0mx3ol97apeodpeca-aaaaaaaa@bounces.example.org");
  assert.deepEqual(complaint.originalRcptTo, ["user@example.com"]);
  assert.deepEqual(complaint.returned, {
    returnPath: "b-0mx3ol97apeodpeca-aaaaaaaa@bounces.example.org",
    ternIds: ["0mx3ol97apeodpeca-bbbbbbbb", "0mx3ol97apeodpeca-cccccccc"],
    recipients: ["user@example.com", "other@example.com"],
  });
});

test("a report without its optional fields, and the types that are complaints", async () => {
  const complaint = await read(arfReport("fbl@example.org", { headers: ["From: a@b.test", "Subject: hi"] }, "Not-Spam"));
  assert.equal(complaint?.feedbackType, "not-spam");
  assert.equal(complaint?.originalMailFrom, undefined);
  assert.deepEqual(complaint?.originalRcptTo, []);
  assert.deepEqual(complaint?.returned.ternIds, []);
  assert.deepEqual([...COMPLAINT_TYPES].sort(), ["abuse", "fraud", "other", "virus"]);
  assert.equal(COMPLAINT_TYPES.has("not-spam"), false);
});

test("a bounce is no feedback report", async () => {
  assert.equal(await read(postfixBounce("fbl@example.org", "carol@relay.test")), undefined);
});
