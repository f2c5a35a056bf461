// `tern cluster up --nodes 2`: two nodes of one cluster on this machine, sharing the
// NATS; both answer SMTP on their derived ports and see each other; SIGTERM stops both.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, uniqueCluster, ternCli } from "../support/tern-node.ts";

/** A base port with 20 free ports after it (two nodes, 10 apart). */
const freeBase = async (): Promise<number> => {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const free = await Promise.all([0, 1, 2, 3, 10, 11, 12, 13].map((offset) => isFree(base + offset)));
    if (free.every(Boolean)) return base;
  }
};
const isFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer().once("error", () => resolve(false)).listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });

const greeting = (port: number) =>
  new Promise<string>((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("error", reject);
    socket.once("data", (data) => {
      socket.end("QUIT\r\n");
      resolve(data.toString());
    });
  });

test("tern cluster up --nodes 2 runs two nodes on derived ports and stops both on SIGTERM", async () => {
  const dir = await makeDataDir();
  const cluster = uniqueCluster();
  const base = await freeBase();
  const configPath = join(dir, "config.json");
  await writeFile(configPath, JSON.stringify({ cluster, listen: { host: "127.0.0.1" }, nats: { servers: ["nats://127.0.0.1:4222"], embedded: false }, events: { maxBytes: 16 * 1024 * 1024 } }));
  const child = spawn(process.execPath, [...ternCli, "cluster", "up", "--nodes", "2", "--config", configPath, "--base-port", String(base), "--data-dir", join(dir, "nodes")], {
    cwd: projectRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  try {
    // A loaded CI machine has taken over 30 s; the nodes' own log lines say where they were.
    await eventually(() => (/node node1 .* is up/.test(stderr) && /node node2 .* is up/.test(stderr) ? true : undefined), 60_000, "both nodes up").catch((error: unknown) => {
      throw new Error(`${String(error)}\nstderr:\n${stderr}\nthe end of stdout:\n${stdout.split("\n").slice(-30).join("\n")}`);
    });
    assert.match(stderr, new RegExp(`node node1 of cluster ${cluster} is up: smtp 127\\.0\\.0\\.1:${base},`));
    assert.match(stderr, new RegExp(`node node2 of cluster ${cluster} is up: smtp 127\\.0\\.0\\.1:${base + 10},`));
    for (const port of [base, base + 10]) assert.match(await greeting(port), /^220 /);
    // Each has its own data dir and node id, and both are members of the one cluster.
    const members = await eventually(async () => {
      const status = await run(process.execPath, [...ternCli, "cluster", "status", "--json", "--config", configPath]);
      const listed = status.code === 0 ? (JSON.parse(status.stdout) as { members: Array<{ node: string }> }).members.map((m) => m.node) : [];
      return listed.length === 2 ? listed : undefined;
    }, 10_000, "both nodes members");
    assert.deepEqual(members, ["node1", "node2"]);
    assert.match(stdout, new RegExp(`"node":"node2".*"dataDir":"${join(dir, "nodes", "node2")}"`));

    child.kill("SIGTERM");
    assert.equal(await exited, 0, stderr);
    assert.equal(stdout.split("\n").filter((line) => line.includes('"event":"node.stopped"')).length, 2, "both nodes stopped gracefully");
    assert.match(stderr, /node1 exited \(0\)/);
    assert.match(stderr, /node2 exited \(0\)/);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    await removeDataDir(dir);
  }
});
