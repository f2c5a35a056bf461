// A real recursive-looking DNS server for tests: dnsmasq serving only the records given,
// authoritative (NXDOMAIN for anything else) inside the zones those records live in.
import { spawn, type ChildProcess } from "node:child_process";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as dnsPacket from "dns-packet";

const DNSMASQ = "/usr/sbin/dnsmasq";
const READY_TIMEOUT_MS = 5000;

export interface DnsmasqOptions {
  mx?: Array<{ domain: string; host: string; preference: number }>;
  /** A and/or AAAA: `address` may be "192.0.2.1", "2001:db8::1" or both comma-separated. */
  hosts?: Array<{ name: string; address: string }>;
  cnames?: Array<{ alias: string; target: string }>;
  /** One TXT record per entry, made of these character-strings (no commas inside). */
  txt?: Array<{ name: string; strings: string[] }>;
  ptr?: Array<{ name: string; target: string }>;
  /** Any other record, as its type number and RDATA in hex (e.g. TLSA is 52). */
  raw?: Array<{ name: string; type: number; hex: string }>;
  /** Zones answered locally only (NXDOMAIN instead of REFUSED). Default: the TLDs of all names given. */
  localZones?: string[];
  /** TTL on every answer (dnsmasq's default for local records is 0). Default 300. */
  ttlSec?: number;
  /**
   * Serve the zones authoritatively instead: negative answers then carry the zone's SOA
   * (RFC 2308), whose TTL and MINIMUM are ttlSec. Reverse (PTR) zones are not served so.
   */
  authoritative?: boolean;
}

export interface RunningDnsmasq {
  host: "127.0.0.1";
  port: number;
  stop(): Promise<void>;
}

export const startDnsmasq = async (options: DnsmasqOptions): Promise<RunningDnsmasq> => {
  const port = await findFreePort();
  const workDir = await mkdtemp(join(tmpdir(), "tern-dnsmasq-"));
  const child = spawn(DNSMASQ, dnsmasqArgs(options, port, workDir), { stdio: ["ignore", "ignore", "pipe"] });
  const stop = () => stopChild(child).then(() => rm(workDir, { recursive: true, force: true }));
  try {
    await waitUntilAnswering(child, port);
  } catch (error) {
    await stop();
    throw error;
  }
  return { host: "127.0.0.1", port, stop };
};

const dnsmasqArgs = (options: DnsmasqOptions, port: number, workDir: string): string[] => [
  "--keep-in-foreground",
  "--conf-file=/dev/null", // ignore the system's /etc/dnsmasq.conf
  "--no-resolv",
  "--no-hosts",
  "--no-poll",
  "--listen-address=127.0.0.1",
  "--bind-interfaces",
  `--port=${port}`,
  "--user=root", // stay root: dropping to "nobody" fails in minimal containers
  `--pid-file=${join(workDir, "dnsmasq.pid")}`,
  "--log-facility=-", // stderr, which we keep only to explain a failed start
  `--local-ttl=${options.ttlSec ?? 300}`,
  ...(options.mx ?? []).map((mx) => `--mx-host=${mx.domain},${mx.host},${mx.preference}`),
  ...(options.hosts ?? []).map((host) => `--host-record=${host.name},${host.address}`),
  ...(options.cnames ?? []).map((cname) => `--cname=${cname.alias},${cname.target}`),
  ...(options.txt ?? []).map((txt) => `--txt-record=${[txt.name, ...txt.strings].join(",")}`),
  ...(options.ptr ?? []).map((ptr) => `--ptr-record=${ptr.name},${ptr.target}`),
  ...(options.raw ?? []).map((rr) => `--dns-rr=${rr.name},${rr.type},${rr.hex}`),
  ...zoneArgs(options),
];

/** `--local` zones, or the same zones served authoritatively (with an SOA) on the listen address. */
const zoneArgs = (options: DnsmasqOptions): string[] => {
  const zones = options.localZones ?? defaultZones(options);
  if (!options.authoritative) return zones.map((zone) => `--local=/${zone}/`);
  return ["--auth-server=ns.tern-test,127.0.0.1", `--auth-ttl=${options.ttlSec ?? 300}`, ...zones.map((zone) => `--auth-zone=${zone}`)];
};

const defaultZones = (options: DnsmasqOptions): string[] => {
  const names = [
    ...(options.mx ?? []).map((mx) => mx.domain),
    ...(options.hosts ?? []).map((host) => host.name),
    ...(options.cnames ?? []).map((cname) => cname.alias),
    ...(options.txt ?? []).map((txt) => txt.name),
    ...(options.ptr ?? []).map((ptr) => ptr.name),
    ...(options.raw ?? []).map((rr) => rr.name),
  ];
  return [...new Set(names.map((name) => name.replace(/\.$/, "").split(".").at(-1) ?? name))];
};

/** A port free for both UDP and TCP (dnsmasq binds both); racy, but fine for tests. */
export const findFreePort = async (): Promise<number> => {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer().once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const address = server.address() as net.AddressInfo;
        server.close(() => resolve(address.port));
      });
    });
    if (await udpPortFree(port)) return port;
  }
};

const udpPortFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    socket.once("error", () => resolve(false));
    socket.bind(port, "127.0.0.1", () => socket.close(() => resolve(true)));
  });

const waitUntilAnswering = async (child: ChildProcess, port: number): Promise<void> => {
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  let exited = false;
  child.once("exit", () => (exited = true));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`dnsmasq exited during start: ${stderr.trim()}`);
    if (await answersOnce(port, 200)) return;
  }
  throw new Error(`dnsmasq did not answer on port ${port} within ${READY_TIMEOUT_MS} ms: ${stderr.trim()}`);
};

/** Sends one probe query; any reply at all means the server is up. */
const answersOnce = (port: number, timeoutMs: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    const finish = (answered: boolean) => {
      clearTimeout(timer);
      socket.close();
      resolve(answered);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.once("message", () => finish(true));
    socket.once("error", () => finish(false));
    socket.send(dnsPacket.encode({ type: "query", id: 1, questions: [{ type: "A", name: "ready.probe" }] }), port, "127.0.0.1");
  });

const stopChild = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
