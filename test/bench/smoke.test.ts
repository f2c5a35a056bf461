// A short run of the benchmark harness, so it keeps working. Its figures are not judged
// here (benchmarks are not timed tests); its loss accounting is.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile, rm, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot, run } from "../support/tern-node.ts";

const bench = async (args: string[]) => {
  const results = await mkdtemp(join(tmpdir(), "tern-bench-"));
  const outcome = await run(process.execPath, ["--import", "tsx", join(projectRoot, "bench/run.ts"), "--results", results, ...args]);
  const [folder] = await readdir(results);
  const report = folder ? JSON.parse(await readFile(join(results, folder, "result.json"), "utf8")) : undefined;
  const chart = folder ? await readFile(join(results, folder, "chart.svg"), "utf8") : "";
  await rm(results, { recursive: true, force: true });
  return { ...outcome, report, chart };
};

test("relay smoke run: every message answered 250 arrives at the sink, with a baseline beside it", async () => {
  const { code, stdout, stderr, report, chart } = await bench(["--messages", "300", "--connections", "5", "--size", "2000-6000"]);
  assert.equal(code, 0, stdout + stderr);
  assert.equal(report.passed, true);
  const [ceiling, relay] = report.reports;
  assert.equal(ceiling.label, "baseline");
  assert.equal(ceiling.accepted, 300);
  assert.equal(relay.label, "relay");
  assert.equal(relay.accepted, 300);
  assert.equal(relay.delivered, 300);
  assert.equal(relay.lost, 0);
  assert.ok(relay.acceptLatencyMs.p99 > 0 && relay.acceptLatencyMs.p99 >= relay.acceptLatencyMs.p50);
  assert.ok(relay.ratioToBaseline > 0);
  // The headline CPU figure: the node's CPU per delivered message (the baseline's per accepted one).
  assert.equal(relay.cpuBasis, "delivered");
  assert.ok(relay.cpuMsPerMessage > 0);
  assert.equal(ceiling.cpuBasis, "accepted");
  assert.match(stdout, /^ {2}relay: CPU [\d.]+ ms per delivered message \(tern n0, user \+ sys\)/m);
  assert.ok(relay.processes.some((p: { name: string; peakRssMiB: number }) => p.name === "tern n0" && p.peakRssMiB > 10));
  assert.ok(report.machine.cores >= 1 && report.machine.nats.includes("nats-server"));
  assert.match(stdout, /^relay +1 +300 /m);
  assert.match(chart, /^<svg .*queue depth/s);
});

test("relay with the floor peer over two rounds: bare smtp-server + nodemailer relay the same load beside Tern, each round a row, then the medians", async () => {
  const { code, stdout, stderr, report } = await bench(["--messages", "300", "--connections", "5", "--no-baseline", "--peers", "floor", "--rounds", "2"]);
  assert.equal(code, 0, stdout + stderr);
  assert.equal(report.passed, true);
  assert.equal(report.comparisons.length, 2);
  for (const comparison of report.comparisons) {
    assert.deepEqual(comparison.map((row: { label: string }) => row.label), ["relay", "sink", "floor"]);
    const floor = comparison.find((row: { label: string }) => row.label === "floor");
    assert.equal(floor.delivered, 300);
    assert.equal(floor.lost, 0);
    assert.ok(floor.cpuMsPerMessage > 0);
    assert.match(floor.system, /^smtp-server [\d.]+ \+ nodemailer [\d.]+, in memory$/);
  }
  assert.deepEqual(report.reports.map((r: { label: string; round: number }) => `${r.label}@${r.round}`), ["sink@1", "relay@1", "floor@1", "sink@2", "relay@2", "floor@2"]);
  const floor = report.summary.find((row: { label: string }) => row.label === "floor");
  assert.equal(floor.rounds, 2);
  assert.equal(floor.lost, 0);
  const cpu = report.reports.filter((r: { label: string }) => r.label === "floor").map((r: { cpuMsPerMessage: number }) => r.cpuMsPerMessage);
  assert.equal(floor.cpuMsPerMessage.median, (cpu[0] + cpu[1]) / 2);
  assert.ok(floor.cpuRatioToTern.median > 0);
  assert.match(stdout, /^round 2 of 2$/m);
  assert.match(stdout, /^median of 2 rounds/m);
  assert.match(stdout, /^ {2}floor: CPU [\d.]+ ms per delivered message \(floor, user \+ sys\)/m);
});

test("kill smoke run: kill -9 of the node midway loses nothing that was answered 250", async () => {
  const { code, stdout, stderr, report } = await bench(["--scenario", "kill", "--messages", "100000", "--duration", "6", "--connections", "4", "--no-baseline", "--rate", "150"]);
  assert.equal(code, 0, stdout + stderr);
  const [killed] = report.reports;
  assert.equal(killed.lost, 0);
  // Enough mail must be answered 250 around the kill for "nothing lost" to mean something; the
  // count itself depends on how fast this machine restarts a node, so the bar is low.
  assert.ok(killed.accepted >= 30, `only ${killed.accepted} accepted`);
  assert.match(killed.notes.join("\n"), /node n0 killed with SIGKILL and restarted/);
  assert.ok(killed.connectionErrors > 0, "the kill should have broken client connections");
});

test("submit smoke run: the same messages over SMTP and over the NATS API into one node, each a row, nothing lost", async () => {
  const { code, stdout, stderr, report } = await bench(["--scenario", "submit", "--messages", "200", "--connections", "4", "--no-baseline"]);
  assert.equal(code, 0, stdout + stderr);
  assert.equal(report.passed, true);
  assert.deepEqual(report.reports.map((r: { label: string }) => r.label), ["submit smtp", "submit nats"]);
  for (const row of report.reports) {
    assert.equal(row.nodes, 1);
    assert.equal(row.accepted, 200, `${row.label}: ${row.refused} refused, ${row.connectionErrors} failed`);
    assert.equal(row.delivered, 200);
    assert.equal(row.lost, 0);
    assert.equal(row.duplicates, 0);
    assert.ok(row.acceptLatencyMs.p99 > 0 && row.acceptLatencyMs.p99 >= row.acceptLatencyMs.p50, row.label);
    assert.ok(row.cpuMsPerAccepted > 0, row.label);
  }
  assert.match(stdout, /^submit smtp +1 +200 /m);
  assert.match(stdout, /^submit nats +1 +200 /m);
});

test("lmdb-floor: the two durable transactions per message, timed, leave no data directory behind", async () => {
  const before = new Set((await readdir(tmpdir())).filter((name) => name.startsWith("tern-lmdb-floor-")));
  const { code, stdout, stderr } = await run(process.execPath, ["--import", "tsx", join(projectRoot, "bench/lmdb-floor.ts"), "--messages", "300", "--writers", "5"]);
  assert.equal(code, 0, stdout + stderr);
  assert.match(stdout, /^300 messages, 5 writers, 5120 B: \d+ msg\/s, CPU [\d.]+ ms per message \(user [\d.]+, sys [\d.]+\)$/m);
  const left = (await readdir(tmpdir())).filter((name) => name.startsWith("tern-lmdb-floor-") && !before.has(name));
  assert.deepEqual(left, []);
});
