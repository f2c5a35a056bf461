// The reputation keys a report that came back counts under (actors/feedback/reputation-keys.ts):
// those of the delivery it is about, read from the message's status.
import { test } from "node:test";
import assert from "node:assert/strict";
import { starterProviders } from "../../../actors/delivery/providers.ts";
import { reputationKeysOf, type KeySources } from "../../../actors/feedback/reputation-keys.ts";
import { parseReply } from "../../../protocol/smtp-reply.ts";
import type { RecipientAttempt, RecipientView } from "../../../protocol/status.ts";

const sources: KeySources = { poolAddresses: new Set(["198.51.100.1", "198.51.100.2"]), providers: starterProviders };

const attempt = (status: RecipientAttempt["status"], fields: Partial<RecipientAttempt>): RecipientAttempt => ({
  at: 1,
  status,
  result: parseReply(status === "delivered" ? "250 2.0.0 ok" : "451 4.3.0 later")!,
  reply: status === "delivered" ? "250 2.0.0 ok" : "451 4.3.0 later",
  ...fields,
});

const view = (history: ReadonlyArray<RecipientAttempt>): RecipientView => ({ recipient: "r@gmail.com", queue: "gmail.com", entry: "M.0", state: "delivered", attempts: history.length, history });

test("the delivered attempt's MX names the provider and its recorded pool address the source, whatever the report says", () => {
  const history = [
    attempt("deferred", { mx: "alt1.gmail-smtp-in.l.google.com", ip: "192.0.2.2", source: "198.51.100.2" }),
    attempt("delivered", { mx: "gmail-smtp-in.l.google.com", ip: "192.0.2.1", source: "198.51.100.1" }),
  ];
  assert.deepEqual(reputationKeysOf("News@Shop.example", view(history), "198.51.100.2", sources), { senderDomain: "shop.example", source: "198.51.100.1", provider: "gmail" });
});

test("an attempt recorded without a source: the report's Source-IP if it is a pool address, else the default address", () => {
  const history = [attempt("delivered", { mx: "mx.elsewhere.example", ip: "192.0.2.9" })];
  assert.deepEqual(reputationKeysOf("a@shop.example", view(history), "198.51.100.2", sources), { senderDomain: "shop.example", source: "198.51.100.2", provider: "other" });
  assert.deepEqual(reputationKeysOf("a@shop.example", view(history), "203.0.113.5", sources), { senderDomain: "shop.example", source: "default", provider: "other" });
  assert.deepEqual(reputationKeysOf("a@shop.example", view(history), undefined, sources).source, "default");
});

test("no attempt that reached an MX: no source address, no provider; the null sender: no sender domain", () => {
  const history = [attempt("deferred", { via: "dns" })];
  assert.deepEqual(reputationKeysOf("", view(history), "198.51.100.1", sources), { senderDomain: undefined, source: undefined, provider: undefined });
  assert.deepEqual(reputationKeysOf("a@shop.example", view([]), undefined, sources), { senderDomain: "shop.example", source: undefined, provider: undefined });
});
