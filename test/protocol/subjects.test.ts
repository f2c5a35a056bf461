// Subjects of one cluster: which reply subjects a node may answer on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { clusterOfSubject, isReplySubject, makeSubjects } from "../../protocol/subjects.ts";

test("answers go to inboxes only: _INBOX and other client prefixes, node, operator and tenant inboxes of the cluster", () => {
  const s = makeSubjects("c1");
  for (const reply of ["_INBOX.abc", "_INBOX_app.x.y", "my.app.replies.1", `${s.nodeInbox("a")}.x`, `${s.operatorInbox}.x`, `${s.tenantInbox("acme")}.x`]) {
    assert.equal(isReplySubject("c1", reply), true, reply);
  }
  for (const reply of ["$KV.tern_c1_mailbox_owners.x", "$JS.API.STREAM.DELETE.X", "$SRV.PING", "tern.c1.events.default.accepted.none", "tern.c1.mailbox.a.deliver", "tern.c2.inbox.a.x", "tern.c1.inbox.a", "tern.c1.tenant.acme.events"]) {
    assert.equal(isReplySubject("c1", reply), false, reply);
  }
  assert.equal(clusterOfSubject("tern.c1.queue.admin"), "c1");
  assert.equal(clusterOfSubject("$SRV.PING"), undefined);
});
