// Haraka (npm, a devDependency) as a peer: a config directory made by `haraka -i` under a
// temporary directory, listening on a free loopback port, with the relay plugin letting
// 127.0.0.1 relay and Haraka's own outbound queue (each message a file in DIR/queue,
// fsynced before the 250, retried on failure) delivering it. The only custom part is a
// get_mx hook that names the sink as every domain's MX, so no DNS is involved (Tern's row
// resolves its MX through dnsmasq). `nodes=cpus`, as Haraka's performance guide advises;
// logging at WARN, so no per-message log lines.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { findFreePort } from "../../../test/support/dnsmasq.ts";
import { stopChild, waitForGreeting, type Peer, type PeerOptions } from "./peer.ts";

const MX_PLUGIN = `// Written by the Tern bench: every outbound domain's MX is the bench sink.
exports.hook_get_mx = function (next, hmail, domain) {
  next(OK, { priority: 0, exchange: '127.0.0.1', port: Number(process.env.TERN_BENCH_SINK_PORT) })
}
`;

const harakaPackage = () => {
  try {
    return createRequire(import.meta.url).resolve("Haraka/package.json");
  } catch {
    throw new Error("the haraka peer needs the Haraka package (a devDependency: run npm install)");
  }
};

export const startHaraka = async (options: PeerOptions): Promise<Peer> => {
  const packageJson = harakaPackage();
  const version = JSON.parse(await readFile(packageJson, "utf8")).version as string;
  const bin = join(dirname(packageJson), "bin/haraka");
  const dir = await mkdtemp(join(tmpdir(), "tern-bench-haraka-"));
  const port = await findFreePort();
  let log = "";
  let child: ChildProcess | undefined;
  try {
    const install = spawn(process.execPath, [bin, "-i", dir], { stdio: "ignore" });
    await new Promise((resolve, reject) => install.once("exit", (code) => (code === 0 ? resolve(code) : reject(new Error(`haraka -i exited ${code}`)))));
    const config = (file: string, text: string) => writeFile(join(dir, "config", file), text);
    await config("smtp.ini", `listen=127.0.0.1:${port}\nnodes=cpus\nforce_shutdown_timeout=5\n`);
    await config("plugins", "relay\nbench_mx\n");
    await config("relay_acl_allow", "127.0.0.1/32\n");
    await config("log.ini", "[main]\nlevel=warn\n");
    await config("outbound.ini", "enable_tls=false\n");
    await writeFile(join(dir, "plugins/bench_mx.js"), MX_PLUGIN);

    const started = spawn(process.execPath, [bin, "-c", dir], {
      cwd: dir,
      env: { ...process.env, TERN_BENCH_SINK_PORT: String(options.sinkPort) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = started;
    const keep = (chunk: Buffer) => (log = (log + chunk.toString()).slice(-20_000));
    started.stdout!.on("data", keep);
    started.stderr!.on("data", keep);
    await waitForGreeting(port, 30_000, () => started.exitCode === null);
    return {
      name: "haraka",
      version: `Haraka ${version}`,
      setup: `config under ${dir}: relay ACL 127.0.0.1, outbound queue in ${dir}/queue (fsynced), get_mx hook → [127.0.0.1]:${options.sinkPort}, nodes=cpus`,
      port,
      pid: started.pid!,
      logTail: async () => log.split("\n").slice(-20).join("\n"),
      stop: async () => {
        await stopChild(started, 8_000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    if (child) await stopChild(child, 2_000);
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${error instanceof Error ? error.message : error}\n${log.split("\n").slice(-10).join("\n")}`);
  }
};
