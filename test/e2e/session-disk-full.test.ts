// A spool that cannot commit (disk full) answers 451, new connections get 421 while it
// stays unhealthy, nothing half-stored remains, and service resumes once there is room.
// Needs root to mount a small tmpfs; skipped elsewhere.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openRaw } from "../support/raw-socket.ts";
import { eventually, run, startTernNode, uniqueCluster, readMetric, type TernNode } from "../support/tern-node.ts";

const mountPoint = mkdtempSync(join(tmpdir(), "tern-full-"));
const canMount = (() => {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mountPoint], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

let node: TernNode | undefined;
const ballast = join(mountPoint, "ballast");

after(async () => {
  await node?.kill("SIGKILL");
  if (canMount) execFileSync("umount", [mountPoint]);
  rmSync(mountPoint, { recursive: true, force: true });
});

const sendMegabyte = (port: number) =>
  run("python3", ["-c", `
import smtplib
body = b"Subject: big\\r\\n\\r\\n" + (b"x" * 998 + b"\\r\\n") * 1000
try:
    s = smtplib.SMTP("127.0.0.1", ${port}, timeout=20)
    s.sendmail("x@y.test", ["r@later.example"], body)
    print("250")
    s.quit()
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPConnectError as e:
    print(e.smtp_code, e.smtp_error.decode())
`]).then((r) => r.stdout.trim());

test("disk full: 451 for the message, 421 for new connections, and recovery when space returns", { skip: !canMount && "needs root to mount a tmpfs" }, async () => {
  node = await startTernNode({
    nodeId: "full",
    cluster: uniqueCluster(),
    dataDir: join(mountPoint, "data"),
    localDomains: ["example.test"],
    users: [{ address: "a@example.test", password: "x" }],
    dns: { servers: ["127.0.0.1:9"], timeoutMs: 200, tries: 1 }, // nothing answers: mail stays queued
  });
  writeFileSync(ballast, Buffer.alloc(8 * 1024 * 1024));

  const replies: string[] = [];
  for (let i = 0; i < 12 && !replies.some((r) => r.startsWith("451")); i++) replies.push(await sendMegabyte(node.ports.smtp));
  const refused = replies.findIndex((r) => r.startsWith("451"));
  assert.ok(refused > 0, `expected some 250s, then a 451: ${JSON.stringify(replies)}`);
  assert.match(replies[refused]!, /^451 4\.3\.0 /);

  const next = await openRaw(node.ports.smtp);
  await next.waitFor(/^421 4\.3\.2 Service temporarily unavailable/);

  rmSync(ballast);
  await eventually(async () => {
    const probe = await openRaw(node!.ports.smtp);
    const greeting = await probe.waitFor(/^\d{3} /).catch(() => "");
    probe.close();
    return greeting.startsWith("220") ? true : undefined;
  }, 15_000, "the spool to recover");
  assert.equal(await sendMegabyte(node.ports.smtp), "250");
  assert.equal(await readMetric(node, "tern_queue_depth"), refused + 1, "exactly the messages answered 250 are queued");
  assert.equal((await fetch(`http://127.0.0.1:${node.ports.http}/healthz`)).status, 200);
});
