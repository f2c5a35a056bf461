// POP3 helpers for end-to-end tests: a raw line client (for what no polite client sends,
// and for holding a session open across a node restart) and Python's poplib.
import * as net from "node:net";
import { run } from "./tern-node.ts";

export interface RawPop3 {
  readonly socket: net.Socket;
  readonly send: (text: string | Buffer) => void;
  /** The next `count` reply lines, without their CRLF. */
  readonly lines: (count: number) => Promise<string[]>;
  /** Sends one command and returns its status line. */
  readonly command: (line: string) => Promise<string>;
  /** Resolves when the server closes the connection, with what arrived but was not read. */
  readonly closed: Promise<string>;
}

/** Connects and, unless `readGreeting` is false, reads the greeting line. */
export const connectPop3 = async (port: number, options: { localAddress?: string; readGreeting?: boolean } = {}): Promise<RawPop3> => {
  const socket = net.connect({ port, host: "127.0.0.1", ...(options.localAddress && { localAddress: options.localAddress }) });
  let received = "";
  let wake = () => {};
  socket.on("data", (chunk: Buffer) => {
    received += chunk.toString("latin1");
    wake();
  });
  socket.on("error", () => wake());
  const closed = new Promise<string>((resolve) => socket.on("close", () => resolve(received)));
  socket.on("close", () => wake());
  const lines = async (count: number): Promise<string[]> => {
    for (;;) {
      const parts = received.split("\r\n");
      if (parts.length > count) {
        received = parts.slice(count).join("\r\n");
        return parts.slice(0, count);
      }
      if (socket.destroyed) throw new Error(`connection closed; got only ${JSON.stringify(received)}`);
      await new Promise<void>((resolve) => (wake = resolve));
    }
  };
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  if (options.readGreeting !== false) await lines(1);
  const send = (text: string | Buffer) => void socket.write(text);
  return {
    socket,
    send,
    lines,
    command: async (line) => {
      send(`${line}\r\n`);
      return (await lines(1))[0]!;
    },
    closed,
  };
};

/** Logs in with USER/PASS; returns the PASS reply. */
export const loginPop3 = async (session: RawPop3, user: string, password: string): Promise<string> => {
  await session.command(`USER ${user}`);
  return session.command(`PASS ${password}`);
};

const POPLIB = `
import hashlib, json, poplib, re, ssl, sys
port, user, password, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    if mode == "stls":
        p.stls(ssl._create_unverified_context())
    p.user(user)
    p.pass_(password)
except poplib.error_proto as e:
    print(json.dumps({"error": e.args[0].decode("latin-1")}))
    sys.exit(0)
uidl = [line.decode().split(" ")[1] for line in p.uidl()[1]]
sizes = [int(line.split()[1]) for line in p.list()[1]]
out = []
for n, size in enumerate(sizes, 1):
    resp, lines, octets = p.retr(n)
    data = b"".join(l + b"\\r\\n" for l in lines)
    final = re.match(rb"Return-Path: [^\\r\\n]*\\r\\nDelivered-To: [^\\r\\n]*\\r\\n", data)
    stored = data[final.end():] if final else data
    m = re.match(rb"Received: [^\\r\\n]*(?:\\r\\n[ \\t][^\\r\\n]*)*\\r\\n", stored)
    rest = stored[m.end():] if m else stored
    out.append({"uidl": uidl[n - 1], "listed": size, "size": len(data), "octets": octets,
                "finalDelivery": final.group(0).decode("latin-1") if final else None,
                "received": m.group(0).decode("latin-1") if m else None,
                "sha256": hashlib.sha256(rest).hexdigest(),
                "head": rest[:200].decode("latin-1")})
p.quit()
print(json.dumps({"messages": out}))
`;

export interface PoppedMessage {
  readonly uidl: string;
  /** Size LIST gave. */
  readonly listed: number;
  /** Size of what RETR returned (dot-unstuffed, CRLFs included). */
  readonly size: number;
  readonly octets: number;
  /** The Return-Path and Delivered-To fields final delivery put in front, if any. */
  readonly finalDelivery: string | null;
  /** The Received: header Tern added at acceptance (after those), if any. */
  readonly received: string | null;
  /** SHA-256 (hex) of the message after that header: what the sender sent. */
  readonly sha256: string;
  readonly head: string;
}

/** Logs in with Python's poplib (optionally after STLS), RETRs every message and QUITs. */
export const poplibFetch = async (
  port: number,
  user: string,
  password: string,
  mode: "plain" | "stls" = "plain",
): Promise<{ messages: PoppedMessage[] } | { error: string }> => {
  const result = await run("python3", ["-c", POPLIB, String(port), user, password, mode]);
  if (result.code !== 0) throw new Error(`poplib failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as { messages: PoppedMessage[] } | { error: string };
};
