// Replies to pipelined commands leave in one write; the STARTTLS 220 still goes out in
// the clear before the handshake. A real smtp-server with the patch loaded, its socket's
// writes counted where they reach the handle (client and server share this process, so
// what the client reads in one chunk says nothing), and nodemailer's client for STARTTLS.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { SMTPServer } from "smtp-server";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import "../../../actors/session/reply-batching.ts";

const servers: SMTPServer[] = [];
after(() => Promise.all(servers.map((server) => new Promise((resolve) => server.close(() => resolve(undefined))))));

/** Writes that reached a socket's handle: one per `_write`, one per `_writev` (corked chunks go together). */
let handleWrites = 0;

const listen = async (options: ConstructorParameters<typeof SMTPServer>[0]) => {
  const server = new SMTPServer({ logger: false, authOptional: true, disableReverseLookup: true, ...options });
  servers.push(server);
  server.server.on("connection", (socket: Socket & { _write: Function; _writev: Function }) => {
    for (const method of ["_write", "_writev"] as const) {
      const original = socket[method];
      socket[method] = function (this: Socket, ...args: unknown[]) {
        handleWrites++;
        return original.apply(this, args);
      };
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.server.address() as { port: number }).port;
};

test("the replies to pipelined MAIL, RCPT, RCPT and DATA leave in one write", async () => {
  // Answered synchronously, as Tern's session answers them (smtp-server's defaults wait a tick).
  const port = await listen({
    disabledCommands: ["AUTH", "STARTTLS"],
    onMailFrom: (_address, _session, callback) => callback(),
    onRcptTo: (_address, _session, callback) => callback(),
    onData: (stream, _session, callback) => {
      stream.resume();
      stream.on("end", () => callback());
    },
  });
  const socket = connect({ host: "127.0.0.1", port });
  let text = "";
  const waitFor = (pattern: RegExp) =>
    new Promise<void>((resolve) => {
      const check = () => pattern.test(text) && (socket.off("data", check), resolve());
      socket.on("data", check);
      check();
    });
  socket.on("data", (chunk: Buffer) => {
    text += chunk.toString("latin1");
  });
  await waitFor(/^220 /);
  socket.write("EHLO client.test\r\n");
  await waitFor(/250 [^\r\n]*\r\n$/);
  for (let n = 0; n < 5; n++) {
    text = "";
    handleWrites = 0;
    socket.write("MAIL FROM:<a@client.test>\r\nRCPT TO:<b@server.test>\r\nRCPT TO:<c@server.test>\r\nDATA\r\n");
    await waitFor(/354 [^\r\n]*\r\n$/);
    assert.equal(handleWrites, 1, `one write for four replies, got ${handleWrites}`);
    assert.match(text, /^250 [^\r\n]*\r\n250 [^\r\n]*\r\n250 [^\r\n]*\r\n354 /);
    socket.write("Subject: x\r\n\r\nbody\r\n.\r\n");
    await waitFor(/\r\n250 [^\r\n]*\r\n$/);
  }
  socket.destroy();
});

test("STARTTLS still works: its 220 goes out before the handshake, and replies after it are batched too", async () => {
  let received = "";
  const port = await listen({
    disabledCommands: ["AUTH"],
    onData: (stream, _session, callback) => {
      stream.on("data", (chunk: Buffer) => (received += chunk.toString()));
      stream.on("end", () => callback());
    },
  });
  const client = new SMTPConnection({ host: "127.0.0.1", port, requireTLS: true, tls: { rejectUnauthorized: false }, logger: false });
  await new Promise<void>((resolve, reject) => {
    client.once("error", reject);
    client.connect(() => resolve());
  });
  assert.equal(client.secure, true);
  for (let n = 0; n < 2; n++) {
    const info = await new Promise<{ accepted: unknown[] }>((resolve, reject) =>
      client.send({ from: "a@client.test", to: ["b@server.test"] }, Buffer.from(`Subject: tls ${n}\r\n\r\nover TLS\r\n`), (error, sent) => (error ? reject(error) : resolve(sent as { accepted: unknown[] }))),
    );
    assert.deepEqual(info.accepted, ["b@server.test"]);
  }
  client.quit();
  assert.match(received, /Subject: tls 1/);
});
