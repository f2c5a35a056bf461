// The caps on pulling large frames from other nodes in the node config.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../nodes/config.ts";

const MB = 1024 * 1024;

test("defaults: 128 MB of pulls at once, 64 MB from one node, 8 pulls", () => {
  assert.deepEqual(parseConfig({}).transfers, { maxPullBytes: 128 * MB, maxPullBytesPerPeer: 64 * MB, maxConcurrentPulls: 8 });
});

test("each cap is set on its own and must be a whole number of at least 1", () => {
  const config = parseConfig({ transfers: { maxPullBytes: 300 * MB, maxPullBytesPerPeer: 100 * MB, maxConcurrentPulls: 20 } });
  assert.deepEqual(config.transfers, { maxPullBytes: 300 * MB, maxPullBytesPerPeer: 100 * MB, maxConcurrentPulls: 20 });
  assert.throws(() => parseConfig({ transfers: { maxConcurrentPulls: 0 } }), /transfers\.maxConcurrentPulls = 0: /);
  assert.throws(() => parseConfig({ transfers: { maxPullBytes: 1.5 } }), /transfers\.maxPullBytes = 1\.5: /);
});

test("caps too small for the largest message accepted are refused: such mail could never reach another node's mailbox", () => {
  assert.throws(
    () => parseConfig({ transfers: { maxPullBytesPerPeer: 20 * MB } }),
    /limits\.maxMessageBytes \(26214400\) is more than one node may pull from another/,
  );
  assert.throws(() => parseConfig({ limits: { maxMessageBytes: 100 * MB } }), /limits\.maxMessageBytes/);
  assert.equal(parseConfig({ limits: { maxMessageBytes: 10 * MB }, transfers: { maxPullBytes: 12 * MB, maxPullBytesPerPeer: 12 * MB } }).transfers.maxPullBytes, 12 * MB);
});
