// The node's HTTP port as a load balancer or Kubernetes sees it: /readyz fails, naming
// the actor, while one is escalated, and is ready again once it recovered.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Deferred } from "effect";
import { Registry } from "prom-client";
import { makeSupervisor } from "../../actors/runtime/supervisor.ts";
import { startHttp } from "../../nodes/http.ts";
import { readinessOf } from "../../nodes/services/listeners.ts";

test("/readyz answers 503 naming an escalated actor (and a drain), 200 once none is left", async () => {
  const supervisor = makeSupervisor();
  let draining = false;
  const drainer = { isDraining: () => draining, begin: () => void (draining = true), finished: Deferred.makeUnsafe<void>() };
  const cluster = { problems: () => [] };
  const { port, server } = await startHttp("127.0.0.1", 0, new Registry(), { problems: readinessOf(supervisor, cluster, drainer) });
  const readyz = async () => {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`);
    return { status: response.status, text: await response.text() };
  };
  try {
    assert.deepEqual(await readyz(), { status: 200, text: "ready\n" });

    const since = Date.UTC(2025, 0, 2, 3, 4, 5);
    supervisor.escalate("site/mx.remote.test", "always", since, since + 30_000);
    assert.deepEqual(await readyz(), {
      status: 503,
      text: "not ready:\nactor site/mx.remote.test escalated since 2025-01-02T03:04:05.000Z: always; rebuilding at 2025-01-02T03:04:35.000Z\n",
    });
    drainer.begin();
    assert.match((await readyz()).text, /^not ready:\ndraining: [^\n]+\nactor site\/mx\.remote\.test escalated since /);

    draining = false;
    supervisor.recover("site/mx.remote.test");
    assert.deepEqual(await readyz(), { status: 200, text: "ready\n" });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
