// The compiled runtime as a user runs it: `npm start` runs the bundle (dist/cli.js) with
// plain node, no tsx in the process tree; `node dist/cli.js queue …` acts on a message by
// the id of its 250 reply (found 0, not found 1, nothing changed 75) and a hold keeps it
// from delivery until released; Ctrl-C (SIGINT to the whole process group: npm, the node,
// and the embedded nats-server if it shared the group) stops the node gracefully.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createConnection } from "node:net";
import { startDnsmasq, findFreePort, type RunningDnsmasq } from "../support/dnsmasq.ts";
import { startScriptedSmtp, type ScriptedServer } from "../support/scripted-smtp.ts";
import { makeDataDir, projectRoot, removeDataDir, run, sleep, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

let dns: RunningDnsmasq;
let sink: ScriptedServer;
let dataDir: string;
let node: TernNode | undefined;

before(async () => {
  // The bundle as `npm ci` (prepare) or `npm run build` leaves it; rebuilt only when a source is newer.
  const built = await run(process.execPath, [join(projectRoot, "scripts/build.mjs"), "--if-stale"]);
  assert.equal(built.code, 0, built.stderr);
  sink = await startScriptedSmtp({});
  dns = await startDnsmasq({ mx: [{ domain: "keep.test", host: "mx.keep.test", preference: 10 }], hosts: [{ name: "mx.keep.test", address: "127.0.0.1" }] });
  dataDir = await makeDataDir();
});

after(async () => {
  await node?.kill("SIGKILL");
  await sink?.close();
  await Promise.all([dns?.stop(), removeDataDir(dataDir)]);
});

/** `tern …` from the bundle, as `npx tern` runs it. */
const tern = (...args: string[]) => run(process.execPath, [join(projectRoot, "dist/cli.js"), ...args]);

const portAnswers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });

/** The command lines of a process's children (Linux /proc). */
const childrenOf = (pid: number): string[] => {
  const tasks = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
  return tasks.map((child) => readFileSync(`/proc/${child}/cmdline`, "utf8").split("\0").join(" ").trim());
};

const send = async (to: string) => {
  const sent = await run("swaks", ["--server", `127.0.0.1:${node!.ports.smtp}`, "--from", "s@origin.test", "--to", to, "--body", "built"]);
  assert.equal(sent.code, 0, sent.stdout);
  return /queued as ([0-9A-Z]+)/.exec(sent.stdout)![1]!;
};

test("npm start runs the bundle with plain node; queue commands by message id; a hold keeps mail until released; Ctrl-C stops gracefully", async () => {
  const natsPort = await findFreePort();
  const config = {
    nodeId: "built",
    cluster: uniqueCluster(),
    dataDir,
    // The embedded nats-server: started by the node, in a process group of its own.
    nats: { servers: [`nats://127.0.0.1:${natsPort}`], embedded: true },
    dns: { servers: [`${dns.host}:${dns.port}`], timeoutMs: 1000, tries: 2, allowedTargetNetworks: ["127.0.0.0/8"] },
    delivery: { remotePort: sink.port, retryBaseMs: 60_000, retryMaxMs: 60_000, pollMs: 50 },
  };
  node = await startTernNode(config, { via: "npm-start", ownGroup: true });
  const processes = childrenOf(node.pid);
  assert.equal(processes.length, 1, `npm runs one process: ${processes.join(" | ")}`);
  assert.match(processes[0]!, /^\S*node \S*dist\/cli\.js node --config /, "the node runs the bundle itself (exec, no shell left between)");
  assert.doesNotMatch(processes.join(" "), /tsx/);
  const q = (...args: string[]) => tern("queue", "--config", join(dataDir, "config-built.json"), ...args);

  // Suspended first, so the message waits for the hold instead of leaving at once.
  assert.equal((await q("suspend", "keep.test")).code, 0);
  const id = await send("k@keep.test");
  const shown = await q("show", id);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, new RegExp(`^node built: ${id}\\.0 keep\\.test \\(suspended\\) from <s@origin\\.test> to k@keep\\.test attempts=0`));
  const unknown = await q("show", "0NOSUCHMESSAGE000");
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no queue entry of 0NOSUCHMESSAGE000/);

  const held = await q("hold", id);
  assert.equal(held.code, 0, held.stderr);
  assert.equal((await q("hold", id)).code, 75, "held already");
  assert.equal((await q("resume", "keep.test")).code, 0);
  await sleep(800);
  assert.equal(sink.accepted.length, 0, "held: not delivered though its queue is resumed");
  const released = await q("release", id);
  assert.equal(released.code, 0, released.stderr);
  await node.waitForEvent("recipient.delivered", { queueId: id }, 10_000);
  assert.equal(sink.accepted.length, 1);

  // Ctrl-C: the terminal signals the whole group (npm, which passes it on as well, and the node).
  const logLines = () => node!.logs().split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line) as { event: string; level?: string });
  const before = logLines().length;
  await node.signalGroup("SIGINT");
  const lines = logLines().slice(before);
  const from = lines.findIndex((line) => line.event === "node.stopping");
  const to = lines.findIndex((line) => line.event === "node.stopped");
  assert.ok(from >= 0 && to > from, `stopped gracefully:\n${node.logs().slice(-3000)}`);
  // NATS outlived the stop: from the signal on, nothing complains of a lost connection
  // (the member record is deleted, the connection drained).
  const troubles = lines.slice(0, to).filter((line) => line.level === "warn" || line.level === "error");
  assert.deepEqual(troubles, []);
  assert.equal(await portAnswers(node.ports.smtp), false);
  let natsGone = false;
  for (let i = 0; i < 50 && !natsGone; i++) {
    natsGone = !(await portAnswers(natsPort));
    if (!natsGone) await sleep(100);
  }
  assert.equal(natsGone, true, "the node stopped its embedded nats-server");
  node = undefined;
});
