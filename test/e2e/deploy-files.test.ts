// The deployment files in docs/deploy hold together: systemd accepts the unit, Prometheus its
// config (with the alert rules beside it), and the compose file's wiring works when played
// here without Docker: `tern nats-config --secrets-dir` as its setup step runs it, a
// nats-server with that configuration, and the three nodes of compose-tern.json with each
// service's TERN_NODE_ID, logging in with the password file the setup step wrote, form one
// cluster.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnNatsServer, type SpawnedNatsServer } from "../support/spawn-nats-server.ts";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, startTernNode, type TernNode, ternCli } from "../support/tern-node.ts";

const deployDir = join(projectRoot, "docs/deploy");
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface ComposeService {
  readonly command?: ReadonlyArray<string> | string;
  readonly environment?: Record<string, string>;
  readonly volumes?: ReadonlyArray<string>;
}
interface ComposeFile {
  readonly services: Record<string, ComposeService>;
}

/** compose.yaml as JSON (python3's yaml: the anchors and merge keys resolved as Compose does). */
const readCompose = async (): Promise<ComposeFile> => {
  const parsed = await run("python3", ["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", join(deployDir, "compose.yaml")]);
  assert.equal(parsed.code, 0, parsed.stderr);
  return JSON.parse(parsed.stdout) as ComposeFile;
};

test("systemd accepts the unit, and it runs the compiled runtime as its own user with a read-only system", async () => {
  const unit = join(deployDir, "tern.service");
  const verified = await run("systemd-analyze", ["verify", unit]);
  assert.equal(verified.code, 0, verified.stderr);
  assert.equal(verified.stderr.trim(), "", "systemd-analyze has no complaint");
  const text = await readFile(unit, "utf8");
  for (const line of ["User=tern", "ProtectSystem=strict", "Restart=on-failure", "RestartPreventExitStatus=78", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes"]) {
    assert.ok(text.split("\n").includes(line), `the unit has ${line}`);
  }
  assert.match(text, /^ExecStart=\/usr\/bin\/node \/opt\/tern\/dist\/cli\.js node --config /m);
});

test("promtool accepts the compose Prometheus config with Tern's alert rules, and it scrapes every node service", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tern-deploy-prom-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  await copyFile(join(deployDir, "prometheus.yml"), join(dir, "prometheus.yml"));
  await copyFile(join(projectRoot, "docs/ops/alerts.yml"), join(dir, "alerts.yml")); // mounted beside it, as compose does
  const checked = await run("promtool", ["check", "config", join(dir, "prometheus.yml")]);
  assert.equal(checked.code, 0, checked.stdout + checked.stderr);
  assert.match(checked.stdout + checked.stderr, /SUCCESS: 1 rule files found/);

  const compose = await readCompose();
  const nodeServices = Object.keys(compose.services).filter((name) => compose.services[name]!.environment?.TERN_NODE_ID !== undefined);
  const targets = [...(await readFile(join(dir, "prometheus.yml"), "utf8")).matchAll(/"([a-z0-9-]+):9025"/g)].map((m) => m[1]);
  assert.deepEqual(targets.sort(), nodeServices.sort());
});

test("the compose cluster's wiring: setup writes the NATS config and password files, and three nodes log in with them and see each other", { timeout: 120_000 }, async () => {
  const compose = await readCompose();
  const services = compose.services;
  const nodeIds = Object.values(services).flatMap((service) => (service.environment?.TERN_NODE_ID !== undefined ? [service.environment.TERN_NODE_ID] : []));
  assert.equal(nodeIds.length, 3);
  assert.equal(new Set(nodeIds).size, 3, "every node service has its own TERN_NODE_ID");
  for (const service of Object.values(services)) {
    for (const volume of service.volumes ?? []) {
      const source = volume.split(":")[0]!;
      if (source.startsWith(".")) assert.ok(existsSync(join(deployDir, source)), `${volume}: its source is in the repository`);
    }
  }

  const config = JSON.parse(await readFile(join(deployDir, "compose-tern.json"), "utf8")) as { cluster: string; nats: { passwordFile: string } } & Record<string, unknown>;
  const setup = [services["nats-setup"]!.command].flat().join(" ");
  const secretsInCompose = config.nats.passwordFile.slice(0, config.nats.passwordFile.lastIndexOf("/"));
  assert.ok(setup.includes(`nats-config --config /etc/tern/tern.json`), setup);
  assert.ok(setup.includes(`--secrets-dir ${secretsInCompose}`), "the setup step writes the password files where the nodes read them");

  // The setup step, here: the same command on the same config, into temporary directories.
  const work = await mkdtemp(join(tmpdir(), "tern-deploy-compose-"));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const secrets = join(work, "secrets");
  const written = await run(process.execPath, [...ternCli, "nats-config", "--config", join(deployDir, "compose-tern.json"), "--listen", "127.0.0.1:4222", "--store-dir", join(work, "jetstream"), "--secrets-dir", secrets]);
  assert.equal(written.code, 0, written.stderr);
  assert.match(written.stdout, /tern-node/);
  const nodePassword = (await readFile(join(secrets, "tern-node.password"), "utf8")).trim();
  assert.ok(written.stdout.includes(nodePassword), "the password file holds the server's node password");

  const nats: SpawnedNatsServer = await spawnNatsServer({ config: written.stdout });
  cleanups.push(() => nats.dispose());
  const nodes: TernNode[] = [];
  for (const nodeId of nodeIds) {
    const dataDir = await makeDataDir();
    cleanups.push(() => removeDataDir(dataDir));
    const node = await startTernNode({
      ...config,
      nodeId,
      dataDir,
      nats: { ...config.nats, servers: [nats.url], passwordFile: join(secrets, "tern-node.password") },
      events: { maxBytes: 16 * 1024 * 1024, maxAgeSec: 3600 },
    });
    cleanups.push(() => node.kill("SIGKILL"));
    nodes.push(node);
  }
  const seenBy = (node: TernNode) => new Set([...node.events("cluster.members").flatMap((e) => e.members as string[]), ...node.events("cluster.member.up").map((e) => String(e.member))]);
  await eventually(() => (nodes.every((node) => seenBy(node).size === 3) ? true : undefined), 20_000, "every node seeing the three");
});
