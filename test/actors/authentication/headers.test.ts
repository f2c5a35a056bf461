// The Authentication-Results field a node writes, and which fields claiming its
// authserv-id are removed (RFC 8601 §5): the id as a token or a quoted string, in any case,
// after comments, in folded fields; other servers' fields and everything else untouched.
import { test } from "node:test";
import assert from "node:assert/strict";
import { authenticationResultsField, authservIdOf, headerFields, withoutClaimedResults } from "../../../actors/authentication/headers.ts";

test("the field names the authserv-id first, then each result on a line of its own", () => {
  assert.equal(
    authenticationResultsField("mx.example.org", ["dkim=pass header.i=@a.example", "spf=pass smtp.mailfrom=b@a.example", "arc=none", "dmarc=pass header.from=a.example"]),
    "Authentication-Results: mx.example.org;\r\n dkim=pass header.i=@a.example;\r\n spf=pass smtp.mailfrom=b@a.example;\r\n arc=none;\r\n dmarc=pass header.from=a.example\r\n",
  );
  assert.equal(authenticationResultsField("mx.example.org", []), "Authentication-Results: mx.example.org; none\r\n");
});

test("a long result is folded into lines of at most 160 octets", () => {
  const long = `spf=pass (${"x ".repeat(300)}) smtp.mailfrom=a@b.example`;
  const field = authenticationResultsField("mx.example.org", [long]);
  assert.ok(field.split("\r\n").every((line) => line.length <= 160), field);
  assert.equal(field.replace(/\r\n /g, " ").replace(/\s+/g, " ").trim(), `Authentication-Results: mx.example.org; ${long}`.replace(/\s+/g, " "));
});

test("the authserv-id is read as a token or a quoted string, after whitespace and comments", () => {
  assert.equal(authservIdOf(" mx.example.org; spf=pass"), "mx.example.org");
  assert.equal(authservIdOf("mx.example.org 1; spf=pass"), "mx.example.org");
  assert.equal(authservIdOf(' (a (nested) comment)\r\n\t"mx.example.org"; none'), "mx.example.org");
  assert.equal(authservIdOf(" mx.example.org;"), "mx.example.org");
  assert.equal(authservIdOf(" ;"), undefined);
});

test("header fields keep their folded lines and line endings", () => {
  assert.deepEqual(headerFields("A: 1\r\nB: 2\r\n\tmore\r\n  still\r\nC: 3"), ["A: 1\r\n", "B: 2\r\n\tmore\r\n  still\r\n", "C: 3"]);
});

test("fields claiming the authserv-id go, in any case, quoted, after a comment, folded; the rest stays in order", () => {
  const section =
    "Received: from a\r\n" +
    "Authentication-Results: mx.example.org; dmarc=pass\r\n" +
    "authentication-results : (trust me) MX.Example.ORG.;\r\n\tspf=pass\r\n" +
    'Authentication-Results: "mx.example.org"; dkim=pass\r\n' +
    "Authentication-Results: relay.other.example; spf=pass\r\n" +
    "Authentication-Results: mx.example.org.evil.example; spf=pass\r\n" +
    "X-Authentication-Results: mx.example.org; spf=pass\r\n" +
    "From: a@b.example\r\n";
  const cleaned = withoutClaimedResults(section, "mx.example.org");
  assert.equal(cleaned.removed, 3);
  assert.equal(
    cleaned.section,
    "Received: from a\r\n" +
      "Authentication-Results: relay.other.example; spf=pass\r\n" +
      "Authentication-Results: mx.example.org.evil.example; spf=pass\r\n" +
      "X-Authentication-Results: mx.example.org; spf=pass\r\n" +
      "From: a@b.example\r\n",
  );
});

test("a section without such fields comes back as it was", () => {
  const section = "From: a@b.example\r\nSubject: Authentication-Results: mx.example.org\r\n";
  assert.deepEqual(withoutClaimedResults(section, "mx.example.org"), { section, removed: 0 });
  assert.deepEqual(withoutClaimedResults("", "mx.example.org"), { section: "", removed: 0 });
});

test("the last field of a section that has no blank line after it is handled too", () => {
  assert.deepEqual(withoutClaimedResults("From: a@b.example\r\nAuthentication-Results: mx.example.org; none", "mx.example.org"), {
    section: "From: a@b.example\r\n",
    removed: 1,
  });
});
