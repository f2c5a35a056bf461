// VERP and X-Tern-Id tokens: they name the message (and recipient) they were made for,
// fit a local part, survive a host that lower-cases them, and any change to them, or a key
// that signed none of them, is caught.
import { test } from "node:test";
import assert from "node:assert/strict";
import { envelopeSenderOf, makeFeedbackTokens, recipientHash, tokenOfVerpAddress, verpAddress } from "../../../actors/feedback/token.ts";
import { newMessageId } from "../../../actors/queue/entry.ts";

const key = (text: string) => new TextEncoder().encode(text);
const tokens = makeFeedbackTokens([key("a first key of enough length")]);
const id = newMessageId(Date.parse("2026-12-01T10:00:00Z"));

test("a message token and a recipient token read back as what they were made for", () => {
  const message = tokens.messageToken(id);
  assert.match(message, /^[0-9a-z]{17}-[a-z2-7]{8}$/);
  assert.deepEqual(tokens.read(message), { _tag: "Valid", token: { messageId: id } });
  const recipient = tokens.recipientToken(id, "Carol@Relay.Test");
  assert.match(recipient, /^[0-9a-z]{17}-[a-z2-7]{8}-[a-z2-7]{8}$/);
  assert.deepEqual(tokens.read(recipient), { _tag: "Valid", token: { messageId: id, recipientHash: recipientHash("carol@relay.test") } });
  assert.notEqual(tokens.recipientToken(id, "dave@relay.test"), recipient, "each recipient has its own");
});

test("a VERP address is a valid local part (lower case, at most 64 octets) and survives upper-casing", () => {
  const address = verpAddress(tokens.recipientToken(id, "carol@relay.test"), "bounces.example.org");
  const local = address.slice(0, address.indexOf("@"));
  assert.ok(local.length <= 64, local);
  assert.match(local, /^b-[0-9a-z-]+$/);
  const token = tokenOfVerpAddress(address.toUpperCase(), "bounces.example.org");
  assert.equal(tokens.read(token!)._tag, "Valid");
  assert.equal(tokenOfVerpAddress(address, "other.example.org"), undefined);
  assert.equal(tokenOfVerpAddress("postmaster@bounces.example.org", "bounces.example.org"), undefined);
});

test("a changed id, recipient hash or mac is forged; text of another shape is malformed", () => {
  const token = tokens.recipientToken(id, "carol@relay.test");
  const [msg, hash, mac] = token.split("-") as [string, string, string];
  const flip = (text: string, at: number) => text.slice(0, at) + (text[at] === "a" ? "b" : "a") + text.slice(at + 1);
  assert.deepEqual(tokens.read(`${flip(msg, 3)}-${hash}-${mac}`), { _tag: "Forged" });
  assert.deepEqual(tokens.read(`${msg}-${flip(hash, 0)}-${mac}`), { _tag: "Forged" });
  assert.deepEqual(tokens.read(`${msg}-${hash}-${flip(mac, 7)}`), { _tag: "Forged" });
  assert.deepEqual(tokens.read(`${msg}-${mac}`), { _tag: "Forged" }, "the recipient's mac does not vouch for the message alone");
  assert.deepEqual(tokens.read("not-a-token"), { _tag: "Malformed" });
  assert.deepEqual(tokens.read(`${msg}-${hash}-${mac}-x`), { _tag: "Malformed" });
});

test("after a key rotation the old key still verifies what it signed, and a dropped key verifies nothing", () => {
  const old = tokens.messageToken(id);
  const rotated = makeFeedbackTokens([key("the new key, long enough too"), key("a first key of enough length")]);
  assert.equal(rotated.read(old)._tag, "Valid");
  assert.notEqual(rotated.messageToken(id), old, "the first key signs");
  const dropped = makeFeedbackTokens([key("the new key, long enough too")]);
  assert.equal(dropped.read(old)._tag, "Forged");
});

test("the envelope sender: VERP per message or per recipient, never for the null sender, the message token for an entry of several", () => {
  const entry = { messageId: id, sender: "news@acme.test", recipients: ["carol@relay.test"] };
  assert.equal(envelopeSenderOf(tokens, "off", "b.test", entry), "news@acme.test");
  assert.equal(envelopeSenderOf(tokens, "message", "b.test", entry), `b-${tokens.messageToken(id)}@b.test`);
  assert.equal(envelopeSenderOf(tokens, "recipient", "b.test", entry), `b-${tokens.recipientToken(id, "carol@relay.test")}@b.test`);
  assert.equal(envelopeSenderOf(tokens, "recipient", "b.test", { ...entry, recipients: ["carol@relay.test", "dave@relay.test"] }), `b-${tokens.messageToken(id)}@b.test`);
  assert.equal(envelopeSenderOf(tokens, "recipient", "b.test", { ...entry, sender: "" }), "");
});
