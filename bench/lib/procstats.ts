// Per-process CPU time and peak memory from /proc (Linux), sampled while a run goes on.
import { readFileSync } from "node:fs";

export interface ProcessUsage {
  readonly name: string;
  readonly pid: number;
  /** CPU seconds (user + system) used during the sampled window. */
  readonly cpuSeconds: number;
  /** CPU used as a share of one core over the window (1.0 = one core busy). */
  readonly cores: number;
  /** Peak resident set size seen, MiB. */
  readonly peakRssMiB: number;
}

const ticksPerSecond = 100; // Linux USER_HZ

const cpuTicks = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return undefined;
  }
};

const rssKiB = (pid: number): number | undefined => {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
};

export interface UsageSampler {
  /** Starts tracking a process (again, under the same name, after a restart). */
  readonly track: (name: string, pid: number) => void;
  readonly stop: () => ReadonlyArray<ProcessUsage>;
}

export const sampleUsage = (intervalMs = 200): UsageSampler => {
  const tracked = new Map<string, { pid: number; startTicks: number; lastTicks: number; doneTicks: number; peakKiB: number }>();
  const started = Date.now();
  const sample = () => {
    for (const entry of tracked.values()) {
      const ticks = cpuTicks(entry.pid);
      if (ticks !== undefined) entry.lastTicks = ticks;
      entry.peakKiB = Math.max(entry.peakKiB, rssKiB(entry.pid) ?? 0);
    }
  };
  const timer = setInterval(sample, intervalMs);
  return {
    track: (name, pid) => {
      const previous = tracked.get(name);
      const ticks = cpuTicks(pid) ?? 0;
      const carried = previous ? previous.doneTicks + (previous.lastTicks - previous.startTicks) : 0;
      tracked.set(name, { pid, startTicks: ticks, lastTicks: ticks, doneTicks: carried, peakKiB: previous?.peakKiB ?? 0 });
    },
    stop: () => {
      sample();
      clearInterval(timer);
      const seconds = (Date.now() - started) / 1000;
      return [...tracked].map(([name, entry]) => {
        const cpuSeconds = (entry.doneTicks + entry.lastTicks - entry.startTicks) / ticksPerSecond;
        return { name, pid: entry.pid, cpuSeconds, cores: seconds > 0 ? cpuSeconds / seconds : 0, peakRssMiB: entry.peakKiB / 1024 };
      });
    },
  };
};
