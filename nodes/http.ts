// The node's HTTP port: /metrics (Prometheus), /healthz (the process answers),
// /readyz (every part started and no actor escalated).
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";

export interface Readiness {
  /** Reasons the node is not ready; empty when ready. */
  readonly problems: () => ReadonlyArray<string>;
}

export const startHttp = (host: string, port: number, registry: Registry, readiness: Readiness): Promise<{ port: number; server: Server }> => {
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (path === "/metrics") {
      registry.metrics().then(
        (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
        (error) => response.writeHead(500).end(String(error)),
      );
    } else if (path === "/healthz") {
      response.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const problems = readiness.problems();
      response
        .writeHead(problems.length === 0 ? 200 : 503, { "content-type": "text/plain" })
        .end(problems.length === 0 ? "ready\n" : `not ready:\n${problems.join("\n")}\n`);
    } else {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve({ port: typeof address === "object" && address ? address.port : port, server });
    });
  });
};
