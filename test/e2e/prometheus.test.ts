// A real Prometheus (the Debian package's binary, with a config and data directory of its
// own, not the package's daemon) scrapes two nodes of one cluster every second with the
// repository's alert rules loaded: the rate of accepted mail is 0 while none flows and
// rises on both nodes once it does, every rule evaluates, and every metric the dashboard
// and the alerts query is one the nodes export.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, makeDataDir, projectRoot, removeDataDir, run, startTernNode, uniqueCluster, type TernNode } from "../support/tern-node.ts";

const ids = ["pa", "pb"] as const;
const nodes: Partial<Record<(typeof ids)[number], TernNode>> = {};
const dataDirs: string[] = [];
let prometheus: ChildProcess | undefined;
let prometheusLog = "";
let promDir: string;
let promPort: number;

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });

before(async () => {
  const cluster = uniqueCluster();
  // One after the other: two nodes starting at once on a busy two-core machine can take longer than the launcher waits.
  for (const id of ids) {
    const dataDir = await makeDataDir();
    dataDirs.push(dataDir);
    nodes[id] = await startTernNode({
      nodeId: id,
      cluster,
      dataDir,
      localDomains: ["example.test"],
      users: [
        { address: "alice@example.test", password: "alice-pw", home: "pa" },
        { address: "bob@example.test", password: "bob-pw", home: "pb" },
      ],
    });
  }
  promDir = await mkdtemp(join(tmpdir(), "tern-prometheus-"));
  promPort = await freePort();
  const config = [
    "global:",
    "  scrape_interval: 1s",
    "  scrape_timeout: 1s",
    "  evaluation_interval: 1s",
    "rule_files:",
    `  - ${JSON.stringify(join(projectRoot, "docs/ops/alerts.yml"))}`,
    "scrape_configs:",
    "  - job_name: tern",
    "    static_configs:",
    `      - targets: [${ids.map((id) => JSON.stringify(`127.0.0.1:${nodes[id]!.ports.http}`)).join(", ")}]`,
  ].join("\n");
  await writeFile(join(promDir, "prometheus.yml"), `${config}\n`);
  prometheus = spawn(
    "prometheus",
    [
      `--config.file=${join(promDir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(promDir, "data")}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  prometheus.stdout!.on("data", (chunk: Buffer) => (prometheusLog += chunk.toString()));
  prometheus.stderr!.on("data", (chunk: Buffer) => (prometheusLog += chunk.toString()));
  await eventually(
    async () => {
      if (prometheus!.exitCode !== null) throw new Error(`prometheus exited (${prometheus!.exitCode}):\n${prometheusLog}`);
      const ready = await fetch(`http://127.0.0.1:${promPort}/-/ready`).catch(() => undefined);
      return ready?.status === 200 ? true : undefined;
    },
    15_000,
    "Prometheus to be ready",
  );
});

after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus!.once("exit", resolve));
    prometheus.kill("SIGTERM");
    await exited;
  }
  await Promise.all(ids.map((id) => nodes[id]?.kill("SIGTERM")));
  await Promise.all(dataDirs.map(removeDataDir));
  if (promDir) await rm(promDir, { recursive: true, force: true });
});

interface Sample {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

/** An instant query over Prometheus' HTTP API. */
const query = async (promql: string): Promise<Sample[]> => {
  const response = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await response.json()) as { status: string; data: { result: Sample[] }; error?: string };
  assert.equal(body.status, "success", `${promql}: ${body.error}`);
  return body.data.result;
};

const RATE = 'sum by (instance) (rate(tern_messages_accepted_total{job="tern"}[15s]))';

test("Prometheus scrapes both nodes; the rate of accepted mail is 0 before mail flows and rises on both once it does", async () => {
  const up = await eventually(async () => {
    const samples = await query('up{job="tern"} == 1');
    return samples.length === 2 ? samples : undefined;
  }, 15_000, "both nodes up");
  const instances = up.map((s) => s.metric.instance).sort();
  assert.deepEqual(instances, ids.map((id) => `127.0.0.1:${nodes[id]!.ports.http}`).sort());
  // Each node's name is on its build info, joined through `instance`.
  const names = await query('tern_build_info{job="tern"}');
  assert.deepEqual(names.map((s) => s.metric.tern_node).sort(), [...ids]);

  // The counter is there at zero from the start, so the rate is 0, not missing.
  const before = await eventually(async () => {
    const samples = await query(RATE);
    return samples.length === 2 ? samples : undefined;
  }, 10_000, "a rate for both nodes");
  assert.deepEqual(before.map((s) => Number(s.value[1])), [0, 0]);

  for (const [id, to] of [["pa", "alice@example.test"], ["pb", "bob@example.test"]] as const) {
    for (let n = 0; n < 3; n++) {
      const sent = await run("swaks", ["--server", `127.0.0.1:${nodes[id]!.ports.smtp}`, "--hide-informational", "--from", "sender@elsewhere.test", "--to", to]);
      assert.equal(sent.code, 0, sent.stdout + sent.stderr);
    }
  }
  const rising = await eventually(async () => {
    const samples = await query(RATE);
    return samples.length === 2 && samples.every((s) => Number(s.value[1]) > 0) ? samples : undefined;
  }, 15_000, "the rate to rise on both nodes");
  assert.equal(rising.length, 2);
  assert.ok(Number((await query(`sum(rate(tern_messages_accepted_total{job="tern"}[15s]))`))[0]!.value[1]) > 0);
});

test("every alert rule evaluates, and every metric the dashboard and the alerts query is exported by the nodes", async () => {
  const rules = await eventually(async () => {
    const response = (await (await fetch(`http://127.0.0.1:${promPort}/api/v1/rules`)).json()) as {
      data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> };
    };
    const all = response.data.groups.flatMap((g) => g.rules);
    return all.length > 0 && all.every((r) => r.health !== "unknown") ? all : undefined;
  }, 10_000, "the rules evaluated");
  assert.deepEqual(rules.filter((r) => r.health !== "ok").map((r) => `${r.name}: ${r.lastError}`), []);
  assert.equal(rules.length, 7);

  const exported = new Set(
    ((await (await fetch(`http://127.0.0.1:${promPort}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data,
  );
  const dashboard = JSON.parse(readFileSync(join(projectRoot, "docs/ops/tern-dashboard.json"), "utf8")) as {
    panels: Array<{ targets?: Array<{ expr: string }> }>;
    templating: { list: Array<{ definition?: string }> };
  };
  const expressions = [
    ...dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr),
    ...dashboard.templating.list.flatMap((v) => (v.definition ? [v.definition] : [])),
    ...[...readFileSync(join(projectRoot, "docs/ops/alerts.yml"), "utf8").matchAll(/(?:tern|nodejs|process)_[a-z0-9_]+/g)].map((m) => m[0]),
  ];
  const named = new Set(expressions.flatMap((expr) => [...expr.matchAll(/\b(?:tern|nodejs|process)_[a-z0-9_]+\b/g)].map((m) => m[0])));
  assert.ok(named.size >= 30, `${named.size} metric names found in the dashboard and alerts`);
  // Series only while something is wrong: no site is backed off here.
  const onlyWhenTroubled = new Set(["tern_site_backoff_level"]);
  assert.deepEqual([...named].filter((name) => !exported.has(name) && !onlyWhenTroubled.has(name)).sort(), [], "queried but not exported");
});
