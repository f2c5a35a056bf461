// The monitoring files of docs/ops/ as Prometheus and Grafana read them: the alert rules
// pass `promtool check rules` and their unit tests (alerts.test.yml), and the dashboard is
// one Grafana JSON model whose every query goes to the chosen Prometheus. That the metrics
// they name exist is checked against real nodes in test/e2e/prometheus.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { projectRoot, run } from "../support/tern-node.ts";

const ops = join(projectRoot, "docs/ops");

test("the alert rules pass promtool check rules and their unit tests", async () => {
  const checked = await run("promtool", ["check", "rules", join(ops, "alerts.yml")]);
  assert.equal(checked.code, 0, checked.stdout + checked.stderr);
  assert.match(checked.stdout, /SUCCESS: \d+ rules found/);
  const tested = await run("promtool", ["test", "rules", join(ops, "alerts.test.yml")]);
  assert.equal(tested.code, 0, tested.stdout + tested.stderr);
});

test("the alert rules cover queue age, bounces, deferrals, spool commits, a node down and the events outbox", () => {
  const text = readFileSync(join(ops, "alerts.yml"), "utf8");
  const alerts = [...text.matchAll(/^\s+- alert: (\S+)$/gm)].map((m) => m[1]);
  assert.deepEqual(alerts, [
    "TernNodeDown",
    "TernQueueOldMessages",
    "TernBounceRateHigh",
    "TernDeferralRateHigh",
    "TernSpoolCommitSlow",
    "TernSpoolDiskLow",
    "TernEventsOutboxLag",
  ]);
});

interface Panel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly gridPos: { readonly x: number; readonly y: number; readonly w: number; readonly h: number };
  readonly datasource?: { readonly uid: string };
  readonly targets?: ReadonlyArray<{ readonly expr: string; readonly refId: string; readonly datasource: { readonly uid: string } }>;
}

test("the dashboard is a Grafana model whose panels query the chosen Prometheus and do not overlap", () => {
  const dashboard = JSON.parse(readFileSync(join(ops, "tern-dashboard.json"), "utf8")) as {
    uid: string;
    templating: { list: Array<{ name: string }> };
    panels: Panel[];
  };
  assert.equal(dashboard.uid, "tern-overview");
  assert.deepEqual(dashboard.templating.list.map((v) => v.name), ["datasource", "job", "instance"]);
  const ids = dashboard.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
  const queried = dashboard.panels.filter((p) => p.type !== "row");
  assert.ok(queried.length >= 20);
  for (const panel of queried) {
    assert.ok(panel.targets && panel.targets.length > 0, `${panel.title} has queries`);
    assert.equal(panel.datasource?.uid, "${datasource}", panel.title);
    for (const target of panel.targets) {
      assert.equal(target.datasource.uid, "${datasource}", panel.title);
      assert.match(target.expr, /job=~"\$job",instance=~"\$instance"/, `${panel.title}: ${target.expr} follows the job and node pickers`);
    }
  }
  // No two panels share a cell of the 24-column grid.
  const cells = new Set<string>();
  for (const { title, gridPos } of dashboard.panels) {
    assert.ok(gridPos.x >= 0 && gridPos.x + gridPos.w <= 24, `${title} fits the width`);
    for (let x = gridPos.x; x < gridPos.x + gridPos.w; x++) {
      for (let y = gridPos.y; y < gridPos.y + gridPos.h; y++) {
        assert.ok(!cells.has(`${x},${y}`), `${title} overlaps another panel at ${x},${y}`);
        cells.add(`${x},${y}`);
      }
    }
  }
});
