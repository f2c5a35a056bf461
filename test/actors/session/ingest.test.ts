// Reading DATA into the spool when the transaction does not end well: the client gone
// mid-body, the size limit passed, a bare LF. Real spool (LMDB in a temp dir), and a
// stream shaped like smtp-server's data stream.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { open, type RootDatabase } from "lmdb";
import { newMessageId } from "../../../actors/queue/entry.ts";
import { openSpool } from "../../../actors/queue/spool.ts";
import { ingest, type IngestOptions } from "../../../actors/session/ingest.ts";

const dirs: string[] = [];
const roots: RootDatabase[] = [];
after(async () => {
  await Promise.all(roots.map((r) => r.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const freshSpool = async () => {
  const dir = await mkdtemp(join(tmpdir(), "tern-ingest-"));
  dirs.push(dir);
  const root = open({ path: join(dir, "tern.lmdb"), maxDbs: 64 });
  roots.push(root);
  return openSpool(root);
};

const options: IngestOptions = { bareLineEndings: "reject", allow8bit: true, prepend: () => "Received: test\r\n" };
const line = Buffer.from(`${"x".repeat(998)}\r\n`);
const dataStream = () => Object.assign(new PassThrough(), { sizeExceeded: false });

test("a stream cut short (the client gone mid-DATA) rejects, with or without an error", async () => {
  const spool = await freshSpool();
  for (const cut of [(s: PassThrough) => s.destroy(new Error("Connection closed")), (s: PassThrough) => s.destroy()]) {
    const stream = dataStream();
    const received = ingest(stream, spool.openBody(newMessageId(1)), options);
    stream.write("Subject: cut\r\n\r\n");
    for (let n = 0; n < 100; n++) stream.write(line);
    cut(stream);
    await assert.rejects(received);
  }
});

test("past the size limit nothing more is written, and the transaction is refused as too large", async () => {
  const spool = await freshSpool();
  const stream = dataStream();
  const body = spool.openBody(newMessageId(2));
  const received = ingest(stream, body, options);
  stream.write("Subject: big\r\n\r\n");
  for (let n = 0; n < 200; n++) stream.write(line);
  await new Promise((resolve) => setImmediate(resolve));
  stream.sizeExceeded = true; // smtp-server sets it as soon as the count passes SIZE
  for (let n = 0; n < 2_000; n++) stream.write(line);
  stream.end();
  const result = await received;
  assert.equal(result.problem, "too-large");
  assert.ok(result.size < 250_000, `${result.size} bytes kept of the 2.2 MB sent`);
  await spool.discardsSettled();
  assert.equal(spool.incomingBodies(), 0, "the partial body is gone before the client finished sending");
});

test("a bare LF refuses the transaction and drops what was written at once", async () => {
  const spool = await freshSpool();
  const stream = dataStream();
  const received = ingest(stream, spool.openBody(newMessageId(3)), options);
  stream.write("Subject: lf\r\n\r\n");
  for (let n = 0; n < 300; n++) stream.write(line);
  stream.write("bare\n");
  await new Promise((resolve) => setImmediate(resolve));
  await spool.discardsSettled();
  assert.deepEqual([spool.incomingBodies(), spool.bodyBytes()], [0, 0], "gone while the client is still sending");
  stream.end(line);
  assert.equal((await received).problem, "bare-line-ending");
});
