import { test } from "node:test";
import assert from "node:assert/strict";
import { badTimeout, timeoutOption } from "../../nodes/timeout-option.ts";

test("--timeout takes whole milliseconds above 0; without it, the command's own wait", () => {
  assert.equal(timeoutOption(undefined, 5_000), 5_000);
  assert.equal(timeoutOption("1500", 5_000), 1_500);
  for (const bad of ["0", "-1", "1.5", "abc", "", "10s"]) assert.equal(timeoutOption(bad, 5_000), undefined, bad);
  assert.equal(badTimeout("10s"), "--timeout 10s: expected milliseconds");
});
