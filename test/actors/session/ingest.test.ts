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

/** A BodyWriter keeping what it is given in memory, to read back what would be stored. */
const memoryBody = () => {
  const chunks: Buffer[] = [];
  let discarded = false;
  return {
    append: (chunk: Uint8Array) => void chunks.push(Buffer.from(chunk)),
    size: () => chunks.reduce((n, c) => n + c.length, 0),
    prepend: () => undefined,
    discard: () => void (discarded = true),
    flushed: () => Promise.resolve(),
    text: () => Buffer.concat(chunks).toString("latin1"),
    discarded: () => discarded,
  };
};

test("the observer sees the message as sent, the store gets the trace first and the header section rewritten", async () => {
  const stream = dataStream();
  const body = memoryBody();
  const seen: Buffer[] = [];
  let waits = 0;
  const received = ingest(stream, body, {
    ...options,
    observe: (bytes) => {
      seen.push(Buffer.from(bytes));
      // Asking to wait now and then: the client is paused, and nothing is lost.
      return ++waits % 2 === 0 ? new Promise((resolve) => setTimeout(resolve, 5)) : undefined;
    },
    rewriteHeader: (section) => section.replace(/^X-Drop: .*\r\n/m, ""),
  });
  const message = "X-Drop: me\r\nSubject: kept\r\n\r\n" + "body line\r\n".repeat(2_000);
  for (let at = 0; at < message.length; at += 1_000) stream.write(Buffer.from(message.slice(at, at + 1_000), "latin1"));
  stream.end();
  assert.equal((await received).problem, undefined);
  assert.equal(Buffer.concat(seen).toString("latin1"), message);
  assert.equal(body.text(), "Received: test\r\n" + message.replace("X-Drop: me\r\n", ""));
});

test("with maxHeaderBytes, a header section that does not end within it refuses the message and keeps nothing", async () => {
  const stream = dataStream();
  const body = memoryBody();
  let observed = 0;
  const received = ingest(stream, body, { ...options, maxHeaderBytes: 4_096, observe: (bytes) => void (observed += bytes.length) });
  for (let n = 0; n < 100; n++) stream.write(`X-Filler-${n}: ${"y".repeat(60)}\r\n`);
  stream.end("\r\nbody\r\n");
  assert.equal((await received).problem, "header-too-large");
  assert.ok(body.discarded());
  assert.equal(observed, 0, "the observer never held the oversized header section");
});

test("without maxHeaderBytes, a long header section still streams on unchanged", async () => {
  const stream = dataStream();
  const body = memoryBody();
  const received = ingest(stream, body, { ...options, rewriteHeader: () => "rewritten\r\n" });
  const header = Array.from({ length: 1_200 }, (_, n) => `X-Filler-${n}: ${"y".repeat(60)}\r\n`).join("");
  for (let at = 0; at < header.length; at += 1_000) stream.write(header.slice(at, at + 1_000));
  stream.end("\r\nbody\r\n");
  assert.equal((await received).problem, undefined);
  assert.equal(body.text(), `Received: test\r\n${header}\r\nbody\r\n`, "not rewritten: a field may be cut where the held part ends");
});
