// A UDP relay in front of a real DNS server (dnsmasq) that holds every reply back a
// while: a node's resolver behind it answers late, so a race against another answerer
// (a rogue NATS subscriber) has a known winner.
import * as dgram from "node:dgram";

export interface SlowDns {
  host: "127.0.0.1";
  port: number;
  stop(): Promise<void>;
}

export const startSlowDns = async (upstream: { host: string; port: number }, delayMs: number): Promise<SlowDns> => {
  const front = dgram.createSocket("udp4");
  const pending = new Set<{ timer?: NodeJS.Timeout; back: dgram.Socket }>();
  front.on("message", (query, client) => {
    const relay: { timer?: NodeJS.Timeout; back: dgram.Socket } = { back: dgram.createSocket("udp4") };
    pending.add(relay);
    const done = () => {
      pending.delete(relay);
      relay.back.close();
    };
    relay.back.once("error", done);
    relay.back.once("message", (reply) => {
      relay.timer = setTimeout(() => {
        front.send(reply, client.port, client.address);
        done();
      }, delayMs);
    });
    relay.back.send(query, upstream.port, upstream.host);
  });
  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.bind(0, "127.0.0.1", () => resolve());
  });
  const stop = async () => {
    for (const relay of pending) {
      clearTimeout(relay.timer);
      relay.back.close();
    }
    pending.clear();
    await new Promise<void>((done) => front.close(() => done()));
  };
  return { host: "127.0.0.1", port: front.address().port, stop };
};
