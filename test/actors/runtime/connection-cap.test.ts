// The overall cap on one listener's sessions: admits up to the cap, refuses above it,
// gives places back, reports every change, and says once per episode that it is full.
import { test } from "node:test";
import assert from "node:assert/strict";
import { makeConnectionCap, type ConnectionEvent } from "../../../actors/runtime/connection-cap.ts";

test("admits up to the cap, refuses the next, and admits again once a session ends", () => {
  const events: ConnectionEvent[] = [];
  const cap = makeConnectionCap({ max: 2, observe: (event) => events.push(event) });
  assert.deepEqual([cap.admit(), cap.admit(), cap.admit()], [true, true, false]);
  assert.equal(cap.open(), 2);
  cap.release();
  assert.equal(cap.admit(), true);
  assert.deepEqual(events, ["opened", "opened", "refused", "closed", "opened"]);
});

test("'full' is reported once per episode, not once per refused client", () => {
  const full: number[] = [];
  const cap = makeConnectionCap({ max: 1, onFull: (open) => full.push(open) });
  cap.admit();
  cap.admit();
  cap.admit();
  assert.deepEqual(full, [1]);
  cap.release();
  cap.admit();
  cap.admit();
  assert.deepEqual(full, [1, 1], "full again after a place came free: a new episode");
});
