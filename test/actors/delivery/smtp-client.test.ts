// SMTP out over one reused connection: what a message costs in writes. A scripted server
// on loopback records the bytes; the client's writes are counted where they reach the
// socket's handle (client and server share this process, so what the server reads in one
// chunk says nothing about how many writes made it).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "node:net";
import { openConnection, sendOver, type Connection, type OutboundOptions } from "../../../actors/delivery/smtp-client.ts";
import type { DsnParams } from "../../../actors/delivery/dsn.ts";
import { startScriptedSmtp, type ScriptedServer } from "../../support/scripted-smtp.ts";

const servers: ScriptedServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

const options = (port: number): OutboundOptions => ({
  heloName: "tern.test",
  port,
  connectTimeoutMs: 1_000,
  greetingTimeoutMs: 1_000,
  socketTimeoutMs: 2_000,
  messagesPerConnection: 100,
  maxRecipientsPerTransaction: 100,
});

const noDsn: DsnParams = { recipient: () => ({}) } as unknown as DsnParams;

/** Counts `_write` and `_writev` calls of sockets to `port` while `run` runs. */
const countingWrites = async <T>(port: number, run: () => Promise<T>): Promise<{ value: T; writes: number }> => {
  const prototype = Socket.prototype as unknown as Record<"_write" | "_writev", (...args: unknown[]) => unknown>;
  const originals = { _write: prototype._write, _writev: prototype._writev };
  let writes = 0;
  for (const method of ["_write", "_writev"] as const) {
    prototype[method] = function (this: Socket, ...args: unknown[]) {
      if (this.remotePort === port) writes++;
      return originals[method].apply(this, args);
    };
  }
  try {
    return { value: await run(), writes };
  } finally {
    Object.assign(prototype, originals);
  }
};

test("a message over a reused, pipelining connection costs two writes: the envelope with DATA, then the body with its final dot", async () => {
  const server = await startScriptedSmtp({});
  servers.push(server);
  const opened = await openConnection({ host: "mx.test", ip: "127.0.0.1" }, options(server.port), "opportunistic", () => undefined, true);
  assert.ok(!("_tag" in opened), `connected: ${JSON.stringify(opened)}`);
  const connection = opened as Connection;
  const body = Buffer.from("Subject: two writes\r\n\r\n.a line that starts with a dot\r\nend\r\n");
  for (let n = 0; n < 3; n++) {
    const { value: sent, writes } = await countingWrites(server.port, () =>
      sendOver(connection, { sender: "a@tern.test", recipients: ["b@mx.test", "c@mx.test"], body: () => body, dsn: noDsn }, options(server.port)),
    );
    assert.deepEqual(sent.results.map((r) => r.result._tag), ["Reply", "Reply"]);
    assert.equal(writes, 2, `message ${n}: ${writes} writes`);
  }
  connection.close();
  assert.equal(server.accepted.length, 3);
  // Dot-stuffed on the wire, unstuffed by the server: the body arrives as it was.
  assert.equal(server.accepted[2]!.body.toString(), body.toString());
});
