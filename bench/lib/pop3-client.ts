// A small POP3 client for the retrieval benchmark: USER/PASS, STAT, RETR (un-stuffed), QUIT.
import { connect, type Socket } from "node:net";

export class Pop3Connection {
  private buffer: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      this.wake?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on("error", () => undefined);
  }

  static async open(host: string, port: number, user: string, password: string): Promise<Pop3Connection> {
    const socket = connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const connection = new Pop3Connection(socket);
    await connection.status();
    await connection.command(`USER ${user}`);
    await connection.command(`PASS ${password}`);
    return connection;
  }

  /** Waits for `terminator` in the buffer and returns everything before it. */
  private async until(terminator: string): Promise<Buffer> {
    for (;;) {
      const at = this.buffer.indexOf(terminator, 0, "latin1");
      if (at >= 0) {
        const head = this.buffer.subarray(0, at);
        this.buffer = this.buffer.subarray(at + terminator.length);
        return head;
      }
      if (this.closed) throw new Error("POP3 connection closed");
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private async status(): Promise<string> {
    const line = (await this.until("\r\n")).toString("latin1");
    if (!line.startsWith("+OK")) throw new Error(`POP3: ${line}`);
    return line;
  }

  async command(line: string): Promise<string> {
    this.socket.write(`${line}\r\n`);
    return this.status();
  }

  async count(): Promise<number> {
    return Number((await this.command("STAT")).split(" ")[1]);
  }

  /** RETR n; returns the message with dot-stuffing removed. */
  async retrieve(n: number): Promise<Buffer> {
    await this.command(`RETR ${n}`);
    const body = await this.until("\r\n.\r\n");
    return Buffer.from(body.toString("latin1").replace(/^\.\./gm, ".") + "\r\n", "latin1");
  }

  async quit(): Promise<void> {
    await this.command("QUIT").catch(() => undefined);
    this.socket.destroy();
  }
}
