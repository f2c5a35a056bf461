// A loopback SMTP server whose every reply a test chooses, on a raw socket so it can
// also misbehave in ways smtp-server will not: a 4xx greeting, a connection dropped in
// the middle of DATA, a server that stops answering. Records each connection and
// transaction (envelope with parameters, exact body bytes).
import { createServer, type Socket } from "node:net";

/** What the server does in answer to a command: reply, hang up, or say nothing at all. */
export type Action = string | { readonly close: true } | { readonly stall: true };

export interface Transaction {
  readonly from: string;
  readonly mailParams: string;
  readonly to: Array<{ readonly address: string; readonly params: string }>;
  readonly body: Buffer;
  readonly connection: number;
  /** The client's address and the name it gave in EHLO/HELO on this transaction's connection. */
  readonly client: { readonly address: string; readonly ehlo: string };
}

export interface ScriptContext {
  /** 0 for the first connection the server accepted. */
  readonly connection: number;
  /** Transactions that reached the end of DATA so far (accepted or not), all connections. */
  readonly transactions: number;
}

export interface Script {
  readonly greeting?: (ctx: ScriptContext) => Action;
  /** EHLO keywords; default PIPELINING, 8BITMIME, SMTPUTF8, DSN, ENHANCEDSTATUSCODES. */
  readonly extensions?: ReadonlyArray<string>;
  readonly mail?: (from: string, ctx: ScriptContext) => Action | undefined;
  readonly rcpt?: (to: string, ctx: ScriptContext) => Action | undefined;
  /** After DATA's 354, once this many body bytes arrived: drop the connection or go silent. */
  readonly duringData?: (ctx: ScriptContext) => { readonly afterBytes: number; readonly action: { close: true } | { stall: true } } | undefined;
  /** The reply to the final dot; default 250. */
  readonly data?: (mail: Transaction, ctx: ScriptContext) => Action | undefined;
  /** Wait this long before answering the final dot (a slow host, for crash tests). */
  readonly dataReplyDelayMs?: number;
}

export interface ScriptedServer {
  readonly port: number;
  /** Transactions answered 250 after DATA. */
  readonly accepted: Transaction[];
  /** Every transaction that reached the final dot, whatever the reply. */
  readonly finished: Transaction[];
  readonly commands: string[];
  readonly connections: () => number;
  /** Connections open right now. */
  readonly open: () => number;
  /** Most connections open at the same time so far (from one client address, if given). */
  readonly peakConnections: (from?: string) => number;
  readonly close: () => Promise<void>;
}

const DEFAULT_EXTENSIONS = ["PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES"];

export const startScriptedSmtp = (script: Script = {}, port = 0, host = "127.0.0.1"): Promise<ScriptedServer> => {
  const accepted: Transaction[] = [];
  const finished: Transaction[] = [];
  const commands: string[] = [];
  const sockets = new Set<Socket>();
  let openNow = 0;
  let connections = 0;
  let peak = 0;
  const openFrom = new Map<string, number>();
  const peakFrom = new Map<string, number>();

  const server = createServer((socket) => {
    const ctx = () => ({ connection: index, transactions: finished.length });
    const index = connections++;
    sockets.add(socket);
    peak = Math.max(peak, ++openNow);
    const client = socket.remoteAddress ?? "";
    openFrom.set(client, (openFrom.get(client) ?? 0) + 1);
    peakFrom.set(client, Math.max(peakFrom.get(client) ?? 0, openFrom.get(client)!));
    // A connection counts as open until the client has said QUIT or the socket is gone, whichever
    // comes first. After the 221 a client may rightly open its next connection, and this server
    // can accept that one before it reads the FIN of the old one (both arrive in the same turn of
    // the event loop), so counting until "close" alone would see two connections where the
    // client had one.
    let counted = true;
    const uncount = () => {
      if (!counted) return;
      counted = false;
      openNow--;
      openFrom.set(client, openFrom.get(client)! - 1);
    };
    socket.on("close", () => {
      sockets.delete(socket);
      uncount();
    });
    socket.on("error", () => undefined);
    let buffer = Buffer.alloc(0);
    let stalled = false;
    let inData = false;
    let dataBytes = 0;
    let envelope: { from: string; mailParams: string; to: Transaction["to"] } | undefined;
    let ehlo = "";

    const act = (action: Action) => {
      if (typeof action === "string") return void socket.write(`${action}\r\n`);
      if ("close" in action) return void socket.destroy();
      stalled = true;
    };

    const command = (line: string) => {
      commands.push(line);
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === "EHLO" || verb === "HELO") ehlo = line.slice(5).trim();
      if (verb === "EHLO") {
        const lines = [`scripted.test greets you`, ...(script.extensions ?? DEFAULT_EXTENSIONS)];
        return act(lines.map((l, n) => `250${n === lines.length - 1 ? " " : "-"}${l}`).join("\r\n"));
      }
      if (verb === "HELO") return act("250 scripted.test");
      if (verb === "MAIL") {
        const match = /^MAIL FROM:\s*<([^>]*)>\s*(.*)$/i.exec(line);
        envelope = { from: match?.[1] ?? "", mailParams: match?.[2] ?? "", to: [] };
        return act(script.mail?.(envelope.from, ctx()) ?? "250 2.1.0 Ok");
      }
      if (verb === "RCPT") {
        const match = /^RCPT TO:\s*<([^>]*)>\s*(.*)$/i.exec(line);
        const address = match?.[1] ?? "";
        const reply = script.rcpt?.(address, ctx());
        if (reply === undefined || (typeof reply === "string" && reply.startsWith("2"))) envelope?.to.push({ address, params: match?.[2] ?? "" });
        return act(reply ?? "250 2.1.5 Ok");
      }
      if (verb === "DATA") {
        if (!envelope || envelope.to.length === 0) return act("554 5.5.1 no valid recipients");
        inData = true;
        dataBytes = 0;
        return act("354 go ahead");
      }
      if (verb === "RSET") {
        envelope = undefined;
        return act("250 2.0.0 Ok");
      }
      if (verb === "NOOP") return act("250 2.0.0 Ok");
      if (verb === "QUIT") {
        uncount();
        socket.end("221 2.0.0 Bye\r\n");
        return;
      }
      return act("502 5.5.2 command not recognized");
    };

    const endOfData = (raw: Buffer) => {
      inData = false;
      const body = Buffer.from(raw.toString("latin1").replace(/^\.\./gm, ".").replace(/\r\n$/, "\r\n"), "latin1");
      const mail: Transaction = { from: envelope?.from ?? "", mailParams: envelope?.mailParams ?? "", to: envelope?.to ?? [], body, connection: index, client: { address: socket.remoteAddress ?? "", ehlo } };
      envelope = undefined;
      finished.push(mail);
      const reply = script.data?.(mail, ctx()) ?? "250 2.0.0 Ok: queued";
      const answer = () => {
        if (typeof reply === "string" && reply.startsWith("2")) accepted.push(mail);
        act(reply);
      };
      if (!script.dataReplyDelayMs) return answer();
      // Commands pipelined after the dot wait for the reply, as they would on a real host.
      stalled = true;
      setTimeout(() => {
        stalled = false;
        answer();
        pump();
      }, script.dataReplyDelayMs);
    };

    const pump = () => {
      while (!stalled) {
        if (inData) {
          const during = script.duringData?.(ctx());
          if (during && dataBytes + buffer.length >= during.afterBytes) {
            buffer = Buffer.alloc(0);
            return act(during.action);
          }
          const end = buffer.indexOf("\r\n.\r\n");
          const atStart = buffer.subarray(0, 3).toString("latin1") === ".\r\n";
          if (atStart) {
            buffer = buffer.subarray(3);
            endOfData(Buffer.alloc(0));
            continue;
          }
          if (end === -1) return;
          const raw = buffer.subarray(0, end + 2);
          buffer = buffer.subarray(end + 5);
          dataBytes += raw.length;
          endOfData(raw);
          continue;
        }
        const eol = buffer.indexOf("\r\n");
        if (eol === -1) return;
        const line = buffer.subarray(0, eol).toString("latin1");
        buffer = buffer.subarray(eol + 2);
        command(line);
      }
    };

    socket.on("data", (chunk: Buffer) => {
      if (stalled) return;
      buffer = Buffer.concat([buffer, chunk]);
      pump();
    });
    act(script.greeting?.(ctx()) ?? "220 scripted.test ESMTP");
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve({
        port: typeof address === "object" && address ? address.port : port,
        accepted,
        finished,
        commands,
        connections: () => connections,
        open: () => openNow,
        peakConnections: (from?: string) => (from === undefined ? peak : (peakFrom.get(from) ?? 0)),
        close: () =>
          new Promise<void>((done) => {
            sockets.forEach((s) => s.destroy());
            server.close(() => done());
          }),
      });
    });
  });
};
