// Per-process CPU time and peak memory from /proc (Linux), sampled while a run goes on.
// A tracked process may stand for its whole process tree (Postfix's master and the daemons
// it forks, Haraka's cluster workers): then the CPU of every descendant counts, including
// the ones that came and went between samples (their time is in the parent's cutime/cstime
// once reaped).
import { readdirSync, readFileSync } from "node:fs";

/**
 * What a process is to the run: the system under test (its CPU is the run's CPU per
 * message), the sink, or a service shared with everything else on the machine (NATS).
 */
export type ProcessRole = "system" | "sink" | "shared";

export interface ProcessUsage {
  readonly name: string;
  readonly pid: number;
  readonly role: ProcessRole;
  /** CPU seconds (user + system) used during the sampled window. */
  readonly cpuSeconds: number;
  /** CPU used as a share of one core over the window (1.0 = one core busy). */
  readonly cores: number;
  /** Peak resident set size seen (of the whole tree, for a tree), MiB. */
  readonly peakRssMiB: number;
}

const ticksPerSecond = 100; // Linux USER_HZ

interface Stat {
  readonly ppid: number;
  /** utime + stime */
  readonly own: number;
  /** cutime + cstime: descendants that ended and were waited for */
  readonly reaped: number;
}

const readStat = (pid: number): Stat | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(fields[1]), own: Number(fields[11]) + Number(fields[12]), reaped: Number(fields[13]) + Number(fields[14]) };
  } catch {
    return undefined;
  }
};

const rssKiB = (pid: number): number => {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
};

/** pid and every live descendant of it. */
const treeOf = (root: number): number[] => {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (stat) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), pid]);
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []));
  return tree;
};

/** CPU ticks of one process, or of a tree: each live member's own time plus what it reaped. */
const cpuTicks = (pid: number, tree: boolean): number | undefined => {
  if (!tree) return readStat(pid)?.own;
  if (!readStat(pid)) return undefined;
  return treeOf(pid).reduce((sum, member) => {
    const stat = readStat(member);
    return sum + (stat ? stat.own + stat.reaped : 0);
  }, 0);
};

const memoryKiB = (pid: number, tree: boolean) => (tree ? treeOf(pid).reduce((sum, member) => sum + rssKiB(member), 0) : rssKiB(pid));

/** The pid of a running process by its command name (e.g. the machine's nats-server), if one runs. */
export const findProcess = (command: string): number | undefined => {
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/comm`, "utf8").trim() === command) return pid;
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
};

export interface TrackOptions {
  readonly role?: ProcessRole;
  /** Count the process's descendants too (default: the process alone). */
  readonly tree?: boolean;
}

export interface UsageSampler {
  /** Starts tracking a process (again, under the same name, after a restart). */
  readonly track: (name: string, pid: number, options?: TrackOptions) => void;
  readonly stop: () => ReadonlyArray<ProcessUsage>;
}

export const sampleUsage = (intervalMs = 200): UsageSampler => {
  const tracked = new Map<string, { pid: number; role: ProcessRole; tree: boolean; startTicks: number; lastTicks: number; doneTicks: number; peakKiB: number }>();
  const started = Date.now();
  const sample = () => {
    for (const entry of tracked.values()) {
      const ticks = cpuTicks(entry.pid, entry.tree);
      if (ticks !== undefined) entry.lastTicks = Math.max(entry.lastTicks, ticks);
      entry.peakKiB = Math.max(entry.peakKiB, memoryKiB(entry.pid, entry.tree));
    }
  };
  const timer = setInterval(sample, intervalMs);
  return {
    track: (name, pid, options = {}) => {
      const previous = tracked.get(name);
      const tree = options.tree ?? false;
      const ticks = cpuTicks(pid, tree) ?? 0;
      const carried = previous ? previous.doneTicks + (previous.lastTicks - previous.startTicks) : 0;
      tracked.set(name, { pid, role: options.role ?? "system", tree, startTicks: ticks, lastTicks: ticks, doneTicks: carried, peakKiB: previous?.peakKiB ?? 0 });
    },
    stop: () => {
      sample();
      clearInterval(timer);
      const seconds = (Date.now() - started) / 1000;
      return [...tracked].map(([name, entry]) => {
        const cpuSeconds = (entry.doneTicks + entry.lastTicks - entry.startTicks) / ticksPerSecond;
        return { name, pid: entry.pid, role: entry.role, cpuSeconds, cores: seconds > 0 ? cpuSeconds / seconds : 0, peakRssMiB: entry.peakKiB / 1024 };
      });
    },
  };
};
