// IMAP subscriptions on a real node with Python's imaplib: a new mailbox has INBOX
// subscribed; SUBSCRIBE needs a folder; LSUB lists only subscribed names (a deleted
// folder's with \Noselect, a level `%` stops at with \Noselect); RENAME takes the
// subscription along; the list holds across a reconnect and a restart of the node.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { makeDataDir, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let node: TernNode | undefined;
let dataDir: string;
const CLUSTER = uniqueCluster();
const config = () => ({
  nodeId: "solo",
  cluster: CLUSTER,
  dataDir,
  localDomains: ["example.test"],
  users: [{ address: "dave@example.test", password: "dave-pw" }],
  imap: { failedLoginDelayMs: 0 },
});

before(async () => {
  dataDir = await makeDataDir();
  node = await startTernNode(config());
});

after(async () => {
  await node?.kill("SIGTERM");
  await removeDataDir(dataDir);
});

/** Runs `body` (Python, with `m` logged in and `out` to fill) and returns `out`. */
const imaplib = async (body: string): Promise<Record<string, unknown>> => {
  const script = `
import imaplib, json
out = {}
m = imaplib.IMAP4("127.0.0.1", ${node!.ports.imap})
m.login("dave@example.test", "dave-pw")
def lsub(pattern="*"):
    return sorted(d.decode() for d in m.lsub('""', pattern)[1] if d)
${body}
m.logout()
print(json.dumps(out))
`;
  const result = await run("python3", ["-c", script]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
};

const LSUB_ALL = ['(\\HasNoChildren) "/" INBOX', '(\\HasNoChildren) "/" Work/Projects', '(\\Noselect \\HasNoChildren) "/" Older'];

test("SUBSCRIBE, UNSUBSCRIBE, RENAME and DELETE as LSUB shows them", { timeout: 60_000 }, async () => {
  const out = await imaplib(`
out["fresh"] = lsub()
for name in ["Work", "Work/Projects", "Old", "Drafts"]:
    m.create(name)
out["after_create"] = lsub()
out["subscribe"] = m.subscribe("Work/Projects")[0]
m.subscribe("Old")
m.subscribe("Drafts")
typ, data = m.subscribe("Nowhere")
out["subscribe_missing"] = typ + " " + data[0].decode()
out["unsubscribe"] = m.unsubscribe("Drafts")[0]
out["unsubscribe_again"] = m.unsubscribe("Drafts")[0]
m.rename("Old", "Older")
out["after_rename"] = lsub()
m.delete("Older")
out["all"] = lsub()
out["level"] = lsub("%")
out["list"] = sorted(d.decode() for d in m.list()[1])
`);
  assert.deepEqual(out.fresh, ['(\\HasNoChildren) "/" INBOX'], "a new mailbox has INBOX subscribed");
  assert.deepEqual(out.after_create, ['(\\HasNoChildren) "/" INBOX'], "CREATE does not subscribe");
  assert.equal(out.subscribe, "OK");
  assert.match(String(out.subscribe_missing), /^NO \[NONEXISTENT\]/);
  assert.equal(out.unsubscribe, "OK");
  assert.equal(out.unsubscribe_again, "OK", "unsubscribing a name not subscribed is not an error");
  assert.deepEqual(out.after_rename, ['(\\HasNoChildren) "/" INBOX', '(\\HasNoChildren) "/" Older', '(\\HasNoChildren) "/" Work/Projects']);
  assert.deepEqual(out.all, LSUB_ALL, "a deleted folder stays subscribed, \\Noselect");
  assert.deepEqual(out.level, ['(\\HasNoChildren) "/" INBOX', '(\\Noselect \\HasChildren) "/" Work', '(\\Noselect \\HasNoChildren) "/" Older']
    .sort(), "% stops at Work: listed \\Noselect since Work itself is not subscribed");
  assert.ok((out.list as string[]).some((line) => line.endsWith('"/" Drafts')), "LIST still lists every folder");
});

test("the subscriptions hold across a reconnect and a restart of the node", { timeout: 90_000 }, async () => {
  assert.deepEqual((await imaplib(`out["lsub"] = lsub()`)).lsub, LSUB_ALL);
  await node!.kill("SIGTERM");
  node = await startTernNode(config());
  assert.deepEqual((await imaplib(`out["lsub"] = lsub()`)).lsub, LSUB_ALL);
});
