// Fills a node's spool directly with N deferred messages (as if a destination had been
// down for a while), much faster than sending them over SMTP, for the memory and
// restart figures of a large backlog:
//
//   npx tsx bench/backlog-fill.ts --data /tmp/backlog --messages 1000000 --size 5120 --domain remote.bench
//
// Entries are spread over the next `--spread` seconds of due time (default 3600), the
// shape a backlog has after a while of retries. Writes go 1,000 at a time, concurrently,
// so LMDB's group commit carries them.
import { parseArgs } from "node:util";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Effect } from "effect";
import { open } from "lmdb";
import { newMessageId, type QueueEntry } from "../actors/queue/entry.ts";
import { openSpool } from "../actors/queue/spool.ts";

const { values } = parseArgs({
  options: {
    data: { type: "string" },
    messages: { type: "string", default: "1000000" },
    size: { type: "string", default: "5120" },
    domain: { type: "string", default: "remote.bench" },
    spread: { type: "string", default: "3600" },
    batch: { type: "string", default: "1000" },
  },
});
if (!values.data) throw new Error("--data DIR is required");
const total = Number(values.messages);
const size = Number(values.size);
const batch = Number(values.batch);
const spreadMs = Number(values.spread) * 1000;

await mkdir(values.data, { recursive: true });
const root = open({ path: join(values.data, "tern.lmdb"), maxDbs: 64 });
const spool = openSpool(root);
const filler = Buffer.alloc(size, "x".charCodeAt(0));
const started = Date.now();
let written = 0;

while (written < total) {
  const count = Math.min(batch, total - written);
  const now = Date.now();
  await Promise.all(
    Array.from({ length: count }, async (_, n) => {
      const id = newMessageId(now - 60_000);
      const body = spool.openBody(id);
      body.append(Buffer.from(`From: bench@origin.bench\r\nTo: r${written + n}@${values.domain}\r\nSubject: backlog ${written + n}\r\nMessage-ID: <${id}@bench>\r\n\r\n`));
      body.append(filler);
      const [entry] = await Effect.runPromise(
        spool.accept({ id, sender: "bench@origin.bench", receivedAt: now - 60_000, body, routes: [{ route: { kind: "remote", domain: values.domain! }, recipients: [`r${written + n}@${values.domain}`] }] }),
      );
      // Deferred once already, due at some point in the coming `spread`.
      const deferred: QueueEntry = { ...entry!, attempts: 1, nextAttemptAt: now + Math.floor(Math.random() * spreadMs), reason: "connection-failed" };
      await Effect.runPromise(spool.settle(entry!, deferred, []));
    }),
  );
  written += count;
  if (written % 50_000 < batch) console.error(`${written} messages, ${((Date.now() - started) / 1000).toFixed(0)} s`);
}
console.log(JSON.stringify({ messages: written, size, seconds: (Date.now() - started) / 1000, depth: spool.depth() }));
await root.close();
