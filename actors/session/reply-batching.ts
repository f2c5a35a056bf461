// smtp-server writes every reply to the socket at once, one write (one system call, one
// TCP segment) each. A client that pipelines (RFC 2920) sends MAIL, RCPT and DATA in one
// segment, and the session answers all three in the same tick: corked, the socket sends
// them in one write. The first reply of a tick corks the socket and the end of the tick
// uncorks it, so no reply waits longer than the code that produced it runs.
// The 220 greeting, and the 220 to STARTTLS after which the socket is handed to TLS, are
// written at once, with anything corked before them.
// Loaded once, before any listener starts.
import type { Socket } from "node:net";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";

interface Sender {
  send(code: number, data?: string | string[], context?: string | false): unknown;
  _socket?: Socket;
}

const corked = new WeakSet<Socket>();

const uncork = (socket: Socket) => {
  if (!corked.delete(socket)) return;
  socket.uncork();
};

const prototype = SMTPConnection.prototype as unknown as Sender & { __ternReplyBatching?: true };
if (!prototype.__ternReplyBatching) {
  const send = prototype.send;
  prototype.send = function (this: Sender, code, data, context) {
    const socket = this._socket;
    if (socket && code === 220) uncork(socket);
    else if (socket && !corked.has(socket) && socket.writable) {
      corked.add(socket);
      socket.cork();
      process.nextTick(uncork, socket);
    }
    return send.call(this, code, data, context);
  };
  prototype.__ternReplyBatching = true;
}
