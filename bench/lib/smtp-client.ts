// A minimal SMTP client for load generation: one socket, replies read line by line,
// MAIL/RCPT/DATA pipelined (RFC 2920) so a message costs two round trips.
// It trades features for speed and exact timing; the product uses nodemailer.
import { connect, type Socket } from "node:net";

export interface Reply {
  readonly code: number;
  readonly text: string;
}

export class SmtpConnection {
  private buffer = "";
  private readonly lines: string[] = [];
  private waiting: ((line: string | undefined) => void) | undefined;
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.buffer += chunk.toString("latin1");
      let at: number;
      while ((at = this.buffer.indexOf("\r\n")) >= 0) {
        this.push(this.buffer.slice(0, at));
        this.buffer = this.buffer.slice(at + 2);
      }
    });
    const end = () => {
      this.closed = true;
      this.waiting?.(undefined);
      this.waiting = undefined;
    };
    socket.on("close", end);
    socket.on("error", end);
  }

  static open(host: string, port: number, heloName: string): Promise<SmtpConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      socket.once("error", reject);
      socket.once("connect", async () => {
        socket.off("error", reject);
        const connection = new SmtpConnection(socket);
        try {
          await connection.expect(220);
          connection.write(`EHLO ${heloName}\r\n`);
          await connection.expect(250);
          resolve(connection);
        } catch (error) {
          socket.destroy();
          reject(error);
        }
      });
    });
  }

  private push(line: string) {
    if (this.waiting) {
      const wake = this.waiting;
      this.waiting = undefined;
      wake(line);
    } else {
      this.lines.push(line);
    }
  }

  private nextLine(): Promise<string | undefined> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  /** Reads one (possibly multi-line) reply. */
  async reply(): Promise<Reply> {
    let text = "";
    for (;;) {
      const line = await this.nextLine();
      if (line === undefined) throw new Error("connection closed");
      text += (text ? "\n" : "") + line.slice(4);
      if (line[3] !== "-") return { code: Number(line.slice(0, 3)), text };
    }
  }

  async expect(code: number): Promise<Reply> {
    const reply = await this.reply();
    if (reply.code !== code) throw new Error(`expected ${code}, got ${reply.code} ${reply.text}`);
    return reply;
  }

  write(data: string | Buffer) {
    this.socket.write(data);
  }

  /**
   * Sends one message. Resolves with the final reply and the time from the end of DATA
   * to that reply (the accept latency). `body` must be dot-stuffed and end with CRLF.
   */
  async send(from: string, to: ReadonlyArray<string>, body: Buffer): Promise<{ reply: Reply; latencyMs: number }> {
    this.write(`MAIL FROM:<${from}>\r\n${to.map((r) => `RCPT TO:<${r}>\r\n`).join("")}DATA\r\n`);
    const mail = await this.reply();
    const rcpts = [];
    for (let i = 0; i < to.length; i++) rcpts.push(await this.reply());
    const data = await this.reply();
    if (mail.code !== 250 || data.code !== 354) {
      if (data.code === 354) this.write(".\r\n"); // end the empty transaction the server opened
      return { reply: data.code === 354 ? await this.reply() : data.code >= 400 ? data : mail, latencyMs: 0 };
    }
    this.write(body);
    const started = performance.now();
    this.write(".\r\n");
    const reply = await this.reply();
    return { reply, latencyMs: performance.now() - started };
  }

  async quit() {
    if (this.closed) return;
    this.write("QUIT\r\n");
    await this.reply().catch(() => undefined);
    this.socket.destroy();
  }

  destroy() {
    this.socket.destroy();
  }
}
