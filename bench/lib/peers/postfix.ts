// Debian's Postfix as a peer: its own instance under a temporary directory (config, queue,
// data and log there; /etc/postfix is only read for its metadata), listening on a free
// loopback port and relaying everything to the sink as its relayhost. Everything else is
// Postfix's default: fsync of each queue file before the 250, connection caching to the
// relayhost, in_flow_delay, logging of every message (to a file, as there is no syslog).
// Postfix needs root (its master drops to the `postfix` user the package creates).
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { findFreePort } from "../../../test/support/dnsmasq.ts";
import { waitForGreeting, type Peer, type PeerOptions } from "./peer.ts";

const run = promisify(execFile);

const mainCf = (dir: string, sinkPort: number) => `# Written by the Tern bench for one run; removed after it.
compatibility_level = 3.6
queue_directory = ${dir}/spool
data_directory = ${dir}/data
meta_directory = /etc/postfix
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
myhostname = postfix.bench
mydomain = bench
myorigin = postfix.bench
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:${sinkPort}
smtp_connection_cache_on_demand = yes
smtp_tls_security_level = none
smtpd_tls_security_level = none
message_size_limit = 52428800
biff = no
`;

// Debian's master.cf minus chroot (the temp dir has no chroot jail) and the services a
// relay does not use (local, virtual, pipe transports, tlsmgr), plus the postlog service.
const masterCf = (port: number) => `# service type private unpriv chroot wakeup maxproc command
127.0.0.1:${port} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
`;

/** postfix(1) reports to syslog, or to stderr only on a terminal: its errors are in the maillog. */
const postfix = async (dir: string, command: string) => {
  try {
    await run("postfix", ["-c", join(dir, "etc"), command]);
  } catch (error) {
    const log = await readFile(join(dir, "maillog"), "utf8").catch(() => "");
    throw new Error(`postfix ${command} failed (${error instanceof Error ? error.message.split("\n")[0] : error})\n${log.split("\n").slice(-10).join("\n")}`);
  }
};

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** postfix stop signals the master and returns; its daemons finish on their own a moment later. */
const gone = async (pid: number, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
};

export const startPostfix = async (options: PeerOptions): Promise<Peer> => {
  if (userInfo().uid !== 0) throw new Error("the postfix peer needs root (Postfix's master runs as root and drops to the postfix user)");
  const version = await run("postconf", ["-d", "-h", "mail_version"]).then((r) => r.stdout.trim(), () => undefined);
  if (!version) throw new Error("the postfix peer needs Debian's postfix package (postconf not found); see the README's Benchmarks section");
  const dir = await mkdtemp(join(tmpdir(), "tern-bench-postfix-"));
  const port = await findFreePort();
  try {
    // The postfix user must reach its data directory; the queue is set up by postfix itself.
    await chmod(dir, 0o755);
    await mkdir(join(dir, "etc"));
    await mkdir(join(dir, "spool"));
    await mkdir(join(dir, "data"));
    const { stdout } = await run("id", ["-u", "postfix"]);
    await chown(join(dir, "data"), Number(stdout.trim()), -1);
    await writeFile(join(dir, "etc/main.cf"), mainCf(dir, options.sinkPort));
    await writeFile(join(dir, "etc/master.cf"), masterCf(port));
    await postfix(dir, "check");
    await postfix(dir, "start");
    await waitForGreeting(port, 20_000);
    const pid = Number((await readFile(join(dir, "spool/pid/master.pid"), "utf8")).trim());
    return {
      name: "postfix",
      version: `Postfix ${version}`,
      setup: `own instance under ${dir}: queue on disk (fsync before 250), relayhost [127.0.0.1]:${options.sinkPort}, connection cache on`,
      port,
      pid,
      logTail: async () => (await readFile(join(dir, "maillog"), "utf8").catch(() => "")).split("\n").slice(-20).join("\n"),
      stop: async () => {
        await postfix(dir, "stop").catch(() => postfix(dir, "abort"));
        await gone(pid, 10_000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await postfix(dir, "abort").catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
};
