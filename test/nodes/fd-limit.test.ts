// The start-time check that the connection caps fit in the file-descriptor limit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { parseConfig } from "../../nodes/config.ts";
import { checkDescriptorLimit, descriptorBudget, parseOpenFilesLimit, RESERVED_DESCRIPTORS, warnIfDescriptorsShort } from "../../nodes/fd-limit.ts";

const PROC_LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

test("the soft limit is read from /proc/<pid>/limits", () => {
  assert.equal(parseOpenFilesLimit(PROC_LIMITS), 1024);
  assert.equal(parseOpenFilesLimit(PROC_LIMITS.replace("1024  ", "unlimited")), Infinity);
  assert.equal(parseOpenFilesLimit("Max cpu time unlimited unlimited seconds\n"), undefined);
});

test("the budget adds the listener caps (SMTP, SMTPS, POP3, IMAP), outbound connections and the reserve", () => {
  const config = parseConfig({
    smtp: { maxConnections: 100, maxSmtpsConnections: 20 },
    pop3: { maxConnections: 50 },
    imap: { maxConnections: 40 },
    delivery: { maxConnections: 30 },
  });
  const reserved = RESERVED_DESCRIPTORS.runtime + RESERVED_DESCRIPTORS.lmdb + RESERVED_DESCRIPTORS.nats + RESERVED_DESCRIPTORS.http + RESERVED_DESCRIPTORS.dns;
  assert.deepEqual(descriptorBudget(config), { smtp: 100, smtps: 20, pop3: 50, imap: 40, delivery: 30, reserved, total: 240 + reserved });
});

test("the defaults fit in 4096 descriptors but not in 1024", () => {
  const budget = descriptorBudget(parseConfig({}));
  assert.equal(checkDescriptorLimit(budget, 4096), undefined);
  assert.deepEqual(checkDescriptorLimit(budget, 1024), { limit: 1024, budget });
  assert.equal(checkDescriptorLimit(budget, budget.total), undefined, "exactly enough fits");
  assert.equal(checkDescriptorLimit(budget, undefined), undefined, "no limit known, nothing to warn about");
});

test("at start, caps beyond this process's real limit are logged as a warning", { skip: process.platform !== "linux" }, async () => {
  const logged: Array<{ event: string; fields?: Record<string, unknown> }> = [];
  const log = (event: string, fields?: Record<string, unknown>) => void logged.push({ event, ...(fields && { fields }) });

  assert.equal(await Effect.runPromise(warnIfDescriptorsShort(parseConfig({ smtp: { maxConnections: 1 }, pop3: { maxConnections: 1 } }), log)), undefined);
  assert.equal(logged.length, 0, "caps that fit are not logged");

  const manyImap = parseConfig({ imap: { maxConnections: 2 ** 40 } });
  assert.ok((await Effect.runPromise(warnIfDescriptorsShort(manyImap, log))) !== undefined, "the IMAP cap counts too");
  assert.equal(logged[0]!.fields?.imap, 2 ** 40);
  assert.match(String(logged[0]!.fields?.text), /imap\.maxConnections/);
  logged.length = 0;

  const huge = parseConfig({ smtp: { maxConnections: 2 ** 40 } });
  const shortfall = await Effect.runPromise(warnIfDescriptorsShort(huge, log));
  assert.ok(shortfall !== undefined);
  assert.equal(logged.length, 1);
  assert.equal(logged[0]!.event, "node.fd-limit.low");
  assert.equal(logged[0]!.fields?.level, "warn");
  assert.equal(logged[0]!.fields?.needed, descriptorBudget(huge).total);
  assert.equal(logged[0]!.fields?.limit, shortfall.limit);
  assert.ok(Number.isFinite(shortfall.limit) && shortfall.limit > 0);
});
