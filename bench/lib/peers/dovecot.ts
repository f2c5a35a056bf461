// Debian's Dovecot (dovecot-imapd) as the IMAP benchmark's peer: its own instance from a
// config written under a temporary directory (base_dir, state_dir, log and mail there;
// /etc/dovecot is not read), IMAP only, listening on a free loopback port without TLS,
// one user in a passwd-file, mail in a Maildir in that user's home. Everything else is
// Dovecot's default (mail_fsync = optimized, index files beside the Maildir, inotify for
// IDLE). Dovecot's master needs root: it runs the login processes as dovenull and the mail
// processes as the dovecot user, which owns the Maildir.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { findFreePort } from "../../../test/support/dnsmasq.ts";

const run = promisify(execFile);

export interface ImapPeer {
  readonly name: string;
  readonly version: string;
  readonly setup: string;
  readonly port: number;
  /** The master's pid: its process tree (login, imap, auth, index processes) is the peer's CPU. */
  readonly pid: number;
  readonly logTail: () => Promise<string>;
  readonly stop: () => Promise<void>;
}

export interface ImapPeerOptions {
  readonly user: { readonly address: string; readonly password: string };
}

const config = (dir: string, port: number, uid: number, gid: number) => `# Written by the Tern bench for one run; removed after it.
protocols = imap
listen = 127.0.0.1
base_dir = ${dir}/run
state_dir = ${dir}/state
instance_name = tern-bench-${randomBytes(3).toString("hex")}
log_path = ${dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = ${uid}
first_valid_gid = ${gid}
mail_location = maildir:~/Maildir
# The fill APPENDs over --connections connections as one user from one address; the
# default (10) would refuse the rest at login.
mail_max_userip_connections = 1000
passdb {
  driver = passwd-file
  args = scheme=PLAIN ${dir}/users
}
userdb {
  driver = passwd-file
  args = ${dir}/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener imaps {
    port = 0
  }
}
`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until 127.0.0.1:port greets with "* OK". */
const waitForImapGreeting = async (port: number, timeoutMs: number, running: () => boolean) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const greeted = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port });
      socket.setTimeout(2000, () => (socket.destroy(), resolve(false)));
      socket.once("error", () => resolve(false));
      socket.once("data", (chunk: Buffer) => {
        socket.end("z LOGOUT\r\n");
        resolve(chunk.toString("latin1").startsWith("* OK"));
      });
    });
    if (greeted) return;
    if (!running()) throw new Error("dovecot exited");
    if (Date.now() > deadline) throw new Error(`nothing greets on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await sleep(100);
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

export const startDovecot = async (options: ImapPeerOptions): Promise<ImapPeer> => {
  if (userInfo().uid !== 0) throw new Error("the dovecot peer needs root (Dovecot's master runs as root and drops to the dovecot and dovenull users)");
  const version = await run("dovecot", ["--version"]).then((r) => r.stdout.trim(), () => undefined);
  if (!version) throw new Error("the dovecot peer needs Debian's dovecot-imapd package (dovecot not found); see the README's Benchmarks section");
  const [uid, gid] = await Promise.all([run("id", ["-u", "dovecot"]), run("id", ["-g", "dovecot"])]).then(([u, g]) => [Number(u.stdout.trim()), Number(g.stdout.trim())]);
  const dir = await mkdtemp(join(tmpdir(), "tern-bench-dovecot-"));
  const port = await findFreePort();
  const log = () => readFile(join(dir, "dovecot.log"), "utf8").catch(() => "");
  let child: ChildProcess | undefined;
  let output = "";
  try {
    await chmod(dir, 0o755);
    await Promise.all(["run", "state", "home"].map((sub) => mkdir(join(dir, sub))));
    await chown(join(dir, "home"), uid!, gid!);
    await writeFile(join(dir, "users"), `${options.user.address}:{PLAIN}${options.user.password}:${uid}:${gid}::${dir}/home/u0\n`);
    await writeFile(join(dir, "dovecot.conf"), config(dir, port, uid!, gid!));
    // In the foreground (-F), as the bench's child: its pid is the master's, and a daemon's
    // inherited stdio would keep a waiting execFile open forever.
    const started = spawn("dovecot", ["-F", "-c", join(dir, "dovecot.conf")], { stdio: ["ignore", "pipe", "pipe"] });
    child = started;
    const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-10_000));
    started.stdout!.on("data", keep);
    started.stderr!.on("data", keep);
    await waitForImapGreeting(port, 20_000, () => started.exitCode === null).catch(async (error) => {
      throw new Error(`dovecot did not start: ${error instanceof Error ? error.message : error}\n${output}${await log()}`);
    });
    const master = started.pid!;
    return {
      name: "dovecot",
      version: `Dovecot ${version.split(" ")[0]}`,
      setup: `own instance under ${dir}: IMAP on 127.0.0.1:${port} without TLS, passwd-file user, Maildir in its home, defaults otherwise (mail_fsync=optimized, inotify for IDLE, which Dovecot delays by a fixed 500 ms, NOTIFY_DELAY_MSECS in index-mailbox-check.c, to batch changes)`,
      port,
      pid: master,
      logTail: async () => (await log()).split("\n").slice(-20).join("\n"),
      stop: async () => {
        if (started.exitCode === null && started.signalCode === null) {
          const exited = new Promise((resolve) => started.once("exit", resolve));
          const killer = setTimeout(() => started.kill("SIGKILL"), 10_000);
          started.kill("SIGTERM");
          await exited;
          clearTimeout(killer);
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    if (child?.pid !== undefined && alive(child.pid)) process.kill(child.pid, "SIGKILL");
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
};
