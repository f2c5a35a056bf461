// A raw IMAP client for the IMAP benchmark: one command at a time, timed from the moment
// the command is written to its tagged reply, with no parsing beyond what framing needs
// (lines and {n} literals), so the client costs little next to the server measured.
// It counts untagged FETCH responses and literal bytes, can keep literal bytes (header
// FETCHes, to check every message is there), APPENDs with LITERAL+, and IDLEs while
// reporting each EXISTS with the time it arrived.
import { connect, type Socket } from "node:net";

export interface TaggedReply {
  readonly status: "OK" | "NO" | "BAD";
  readonly text: string;
  /** From the command written to the tagged reply read. */
  readonly ms: number;
  /** Untagged FETCH responses seen while the command ran. */
  readonly fetches: number;
  /** Bytes of literals in the responses while the command ran. */
  readonly literalBytes: number;
}

interface Pending {
  readonly tag: string;
  readonly startedAt: number;
  readonly resolve: (reply: TaggedReply) => void;
  readonly reject: (error: Error) => void;
}

export class ImapConnection {
  private rest: Buffer = Buffer.alloc(0);
  /** Bytes of the literal being read that are still to come. */
  private literalLeft = 0;
  /** The response being read: its lines without the literals. */
  private text = "";
  private tagCounter = 0;
  private pending: Pending | undefined;
  private continuation: (() => void) | undefined;
  private fetches = 0;
  private literalBytes = 0;
  private keep: Buffer[] | undefined;
  private closedWith: Error | undefined;
  private greeted: ((line: string) => void) | undefined;
  /** The last EXISTS count heard, and listeners for the next ones. */
  exists = 0;
  private existsListeners = new Set<(count: number, at: number) => void>();

  private constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("close", () => this.fail(new Error("IMAP connection closed")));
    socket.on("error", (error) => this.fail(error));
  }

  static async open(host: string, port: number, user: string, password: string): Promise<ImapConnection> {
    const socket = connect({ host, port });
    socket.setNoDelay(true);
    const connection = new ImapConnection(socket);
    const greeting = await new Promise<string>((resolve, reject) => {
      connection.greeted = resolve;
      socket.once("error", reject);
    });
    if (!greeting.startsWith("* OK")) throw new Error(`IMAP greeting: ${greeting}`);
    await connection.command(`LOGIN ${quote(user)} ${quote(password)}`);
    return connection;
  }

  private fail(error: Error) {
    this.closedWith ??= error;
    this.pending?.reject(error);
    this.pending = undefined;
  }

  private onData(chunk: Buffer) {
    const buffer = this.rest.length > 0 ? Buffer.concat([this.rest, chunk]) : chunk;
    let at = 0;
    for (;;) {
      if (this.literalLeft > 0) {
        const take = Math.min(this.literalLeft, buffer.length - at);
        this.keep?.push(buffer.subarray(at, at + take));
        this.literalLeft -= take;
        this.literalBytes += take;
        at += take;
        if (this.literalLeft > 0) break;
        continue;
      }
      const end = buffer.indexOf("\r\n", at, "latin1");
      if (end < 0) break;
      const line = buffer.toString("latin1", at, end);
      at = end + 2;
      this.text += line;
      const literal = /\{(\d+)\+?\}$/.exec(line);
      if (literal) {
        this.literalLeft = Number(literal[1]);
        continue;
      }
      const response = this.text;
      this.text = "";
      this.onResponse(response);
    }
    this.rest = at < buffer.length ? Buffer.from(buffer.subarray(at)) : Buffer.alloc(0);
  }

  private onResponse(response: string) {
    if (this.greeted) {
      const greeted = this.greeted;
      this.greeted = undefined;
      return greeted(response);
    }
    if (response.startsWith("+")) return this.continuation?.();
    if (response.startsWith("* ")) {
      const exists = /^\* (\d+) EXISTS/i.exec(response);
      if (exists) {
        this.exists = Number(exists[1]);
        const at = performance.now();
        for (const listener of this.existsListeners) listener(this.exists, at);
      } else if (/^\* \d+ FETCH/i.test(response)) this.fetches++;
      return;
    }
    const pending = this.pending;
    const [tag, status] = response.split(" ", 2);
    if (!pending || tag !== pending.tag) return;
    this.pending = undefined;
    pending.resolve({
      status: (status?.toUpperCase() ?? "BAD") as TaggedReply["status"],
      text: response,
      ms: performance.now() - pending.startedAt,
      fetches: this.fetches,
      literalBytes: this.literalBytes,
    });
  }

  /** Writes `tag text` (plus `extra` bytes, for a LITERAL+ APPEND) and waits for the tagged reply. */
  private send(text: string, extra?: Buffer): Promise<TaggedReply> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const tag = `b${++this.tagCounter}`;
    this.fetches = 0;
    this.literalBytes = 0;
    return new Promise<TaggedReply>((resolve, reject) => {
      this.pending = { tag, startedAt: performance.now(), resolve, reject };
      this.socket.write(extra ? Buffer.concat([Buffer.from(`${tag} ${text}\r\n`, "latin1"), extra, Buffer.from("\r\n")]) : `${tag} ${text}\r\n`);
    });
  }

  /** Runs a command; a NO or BAD rejects. */
  async command(text: string): Promise<TaggedReply> {
    const reply = await this.send(text);
    if (reply.status !== "OK") throw new Error(`IMAP ${text.split(" ")[0]}: ${reply.text}`);
    return reply;
  }

  /** Runs a command and returns the literal bytes of its responses too (header FETCHes). */
  async collect(text: string): Promise<{ reply: TaggedReply; literals: Buffer }> {
    this.keep = [];
    try {
      const reply = await this.command(text);
      return { reply, literals: Buffer.concat(this.keep) };
    } finally {
      this.keep = undefined;
    }
  }

  /** APPEND with a non-synchronizing literal (LITERAL+, which both servers measured offer). */
  append(mailbox: string, message: Buffer): Promise<TaggedReply> {
    return this.send(`APPEND ${mailbox} {${message.length}+}`, message);
  }

  /** Enters IDLE; resolves once the server's continuation says it is idling. `done()` ends it. */
  async idle(): Promise<{ done: () => Promise<TaggedReply> }> {
    const idling = new Promise<void>((resolve) => (this.continuation = resolve));
    const finished = this.send("IDLE");
    await Promise.race([idling, finished.then((reply) => Promise.reject(new Error(`IMAP IDLE: ${reply.text}`)))]);
    this.continuation = undefined;
    return {
      done: () => {
        this.socket.write("DONE\r\n");
        return finished;
      },
    };
  }

  /** Resolves with the arrival time (performance.now()) of the first EXISTS above `count`. */
  existsAbove(count: number, timeoutMs: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const listener = (exists: number, at: number) => {
        if (exists <= count) return;
        clearTimeout(timer);
        this.existsListeners.delete(listener);
        resolve(at);
      };
      const timer = setTimeout(() => {
        this.existsListeners.delete(listener);
        resolve(undefined);
      }, timeoutMs);
      this.existsListeners.add(listener);
    });
  }

  async logout(): Promise<void> {
    await this.send("LOGOUT").catch(() => undefined);
    this.socket.destroy();
  }

  destroy() {
    this.socket.destroy();
  }
}

const quote = (text: string) => `"${text.replace(/["\\]/g, (c) => `\\${c}`)}"`;
