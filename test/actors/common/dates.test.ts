import { test } from "node:test";
import assert from "node:assert/strict";
import { rfc5322Date } from "../../../actors/common/dates.ts";

test("dates are written as RFC 5322 date-times in UTC with a numeric zone", () => {
  assert.equal(rfc5322Date(Date.UTC(2026, 10, 30, 16, 35, 27)), "Mon, 30 Nov 2026 16:35:27 +0000");
  assert.equal(rfc5322Date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
});
