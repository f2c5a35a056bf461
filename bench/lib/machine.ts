// What the run was measured on: figures from one machine are only comparable with
// figures from the same machine.
import { execFileSync } from "node:child_process";
import { cpus, totalmem, loadavg } from "node:os";

export interface MachineInfo {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly loadAverage: ReadonlyArray<number>;
  readonly node: string;
  readonly nats: string;
}

const natsVersion = () => {
  for (const binary of ["nats-server", "/usr/sbin/nats-server"]) {
    try {
      return execFileSync(binary, ["--version"], { encoding: "utf8" }).trim();
    } catch {
      // try the next location
    }
  }
  return "unknown";
};

export const describeMachine = (): MachineInfo => ({
  cpuModel: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
  loadAverage: loadavg().map((n) => Math.round(n * 100) / 100),
  node: process.version,
  nats: natsVersion(),
});
