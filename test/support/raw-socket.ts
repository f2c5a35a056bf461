// A raw TCP conversation for protocol tests: send exact bytes, read what comes back.
import { connect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";

export interface RawConversation {
  /** Everything received so far. */
  readonly received: () => string;
  readonly send: (data: string | Buffer) => void;
  /** Waits until the received text matches (or the connection closes, or timeout). */
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<string>;
  readonly closed: () => boolean;
  readonly close: () => void;
}

export const openRaw = (port: number, options: { tls?: boolean; host?: string; localAddress?: string } = {}): Promise<RawConversation> =>
  new Promise((resolve, reject) => {
    const from = options.localAddress ? { localAddress: options.localAddress } : {};
    const socket: Socket = options.tls
      ? tlsConnect({ host: options.host ?? "127.0.0.1", port, rejectUnauthorized: false, ...from })
      : connect({ host: options.host ?? "127.0.0.1", port, ...from });
    let text = "";
    let isClosed = false;
    const listeners = new Set<() => void>();
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
      listeners.forEach((l) => l());
    });
    socket.on("close", () => {
      isClosed = true;
      listeners.forEach((l) => l());
    });
    socket.on("error", () => undefined);
    socket.once(options.tls ? "secureConnect" : "connect", () =>
      resolve({
        received: () => text,
        send: (data) => void socket.write(data),
        closed: () => isClosed,
        close: () => socket.destroy(),
        waitFor: (pattern, timeoutMs = 5000) =>
          new Promise((done, fail) => {
            const check = () => {
              if (pattern.test(text)) return finish(() => done(text));
              if (isClosed) return finish(() => fail(new Error(`closed before ${pattern}: ${JSON.stringify(text)}`)));
            };
            const timer = setTimeout(() => finish(() => fail(new Error(`timeout waiting for ${pattern}: ${JSON.stringify(text)}`))), timeoutMs);
            const finish = (then: () => void) => {
              clearTimeout(timer);
              listeners.delete(check);
              then();
            };
            listeners.add(check);
            check();
          }),
      }),
    );
    socket.once("error", reject);
  });
