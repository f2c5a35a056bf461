// The least the durable part of relaying costs with Tern's store: per message, one LMDB
// transaction that writes a 5 KB body and two small records (as an accept does) and a
// second that removes them (as a delivery's outcome does), each awaited until it is on disk,
// `--writers` at once as concurrent sessions would, in lmdb-js's defaults (what Tern opens).
// Prints the CPU (user + sys, all threads of this process) per message. Not Tern's spool:
// no indexes beyond these, no events, no reads; a floor under it, to set beside the
// bench's `floor` peer (the SMTP libraries' own cost).
//   npx tsx bench/lmdb-floor.ts [--messages N] [--writers W] [--size B]
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { open } from "lmdb";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "20000" },
    writers: { type: "string", default: "20" },
    size: { type: "string", default: "5120" },
  },
});
const messages = Number(values.messages);
const writers = Number(values.writers);
const body = Buffer.alloc(Number(values.size), "x");

const dir = await mkdtemp(join(tmpdir(), "tern-lmdb-floor-"));
const root = open({ path: join(dir, "floor.lmdb"), maxDbs: 8 });
const bodies = root.openDB<Buffer, string>({ name: "bodies" });
const records = root.openDB<{ id: string; sender: string; receivedAt: number; recipients: string[] }, string>({ name: "records" });
const queued = root.openDB<boolean, [string, number, string]>({ name: "queued" });

let next = 0;
const writer = async () => {
  while (next < messages) {
    const id = `m${next++}`;
    const at = Date.now();
    await root.transaction(() => {
      bodies.put(id, body);
      records.put(id, { id, sender: "bench@load.tern", receivedAt: at, recipients: ["u1@remote.bench"] });
      queued.put(["remote.bench", at, id], true);
    });
    await root.transaction(() => {
      bodies.remove(id);
      records.remove(id);
      queued.remove(["remote.bench", at, id]);
    });
  }
};

const before = process.cpuUsage();
const started = performance.now();
await Promise.all(Array.from({ length: writers }, writer));
const cpu = process.cpuUsage(before);
const seconds = (performance.now() - started) / 1000;
console.log(
  `${messages} messages, ${writers} writers, ${body.length} B: ${(messages / seconds).toFixed(0)} msg/s, ` +
    `CPU ${((cpu.user + cpu.system) / 1000 / messages).toFixed(3)} ms per message (user ${(cpu.user / 1000 / messages).toFixed(3)}, sys ${(cpu.system / 1000 / messages).toFixed(3)})`,
);
await root.close();
await rm(dir, { recursive: true, force: true });
