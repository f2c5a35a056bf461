// `tern pools`: every node's IP pools over NATS, with the warm-up of each cold source
// address: its day, today's caps per destination provider, and what it sent this UTC day
// and this hour to each provider (actors/delivery/pools-status.ts).
import { parseArgs } from "node:util";
import { askPools, type PoolsAnswer } from "../actors/delivery/pools-status.ts";
import type { AddressView, PoolsReply, ProviderUsage } from "../protocol/pools.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { memberIds } from "./cluster-members.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const poolsUsage = `usage: tern pools [--config FILE] [--node ID] [--json] [--timeout MS]
Shows each node's IP pools and their source addresses. For an address still warming up:
its day of warm-up, today's caps per destination provider, and per provider what it sent
this UTC day and this clock hour against those caps ("other": destinations of no provider
of the table). Without --node every node answers.
Exit status: 0 every node that answered did, 1 one failed, 2 bad usage, 69 no node answered.`;

export const runPools = (args: string[]): Promise<number> => poolsCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

/** Runs one `tern pools`; resolves with the exit code. */
export const poolsCommand = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      node: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    io.out(poolsUsage);
    return 0;
  }
  const timeoutMs = timeoutOption(values.timeout, 10_000);
  if (positionals.length > 0 || timeoutMs === undefined) {
    io.err(`tern: ${positionals.length > 0 ? `unexpected ${JSON.stringify(positionals[0])}` : badTimeout(values.timeout)}\n${poolsUsage}`);
    return 2;
  }
  const config = await loadConfig(values.config, process.env);
  const nc = await connectAsOperator(config, "tern-pools");
  try {
    const subjects = makeSubjects(config.cluster);
    // Every node is asked unless one is named: the member list tells when all have answered.
    const members = values.node === undefined ? memberIds(nc, subjects, Math.min(timeoutMs, 2_000)) : undefined;
    const answers = await askPools(nc, subjects, { node: values.node, timeoutMs, members }).catch((error: Error) => {
      io.err(`tern: ${values.node ? `node ${values.node}` : "no node"} answered: ${error.message}`);
      return [] as PoolsAnswer[];
    });
    if (answers.length === 0) {
      io.err(`tern: no node of cluster ${config.cluster} answered`);
      return 69; // EX_UNAVAILABLE
    }
    for (const answer of [...answers].sort((a, b) => nodeOf(a).localeCompare(nodeOf(b)))) {
      if (!answer.ok) io.err(`tern: node ${answer.node}: ${answer.detail}`);
      else io.out(values.json ? JSON.stringify(answer.reply) : render(answer.reply));
    }
    return answers.every((a) => a.ok) ? 0 : 1;
  } finally {
    await nc.close();
  }
};

const nodeOf = (answer: PoolsAnswer) => (answer.ok ? answer.reply.node : answer.node);

const time = (at: number) => new Date(at).toISOString().replace(/:\d{2}\.\d+Z$/, "Z");

export const render = (reply: PoolsReply): string => {
  if (reply.pools.length === 0) return `node ${reply.node}: no IP pools (mail leaves from the system's default address)`;
  return [
    `node ${reply.node} at ${time(reply.at)} (days and hours are UTC)`,
    ...reply.pools.flatMap((pool) => [`  pool ${pool.pool} (at a warm-up cap: ${pool.overflow === "warm" ? "overflow to addresses with room" : "wait"})`, ...pool.addresses.flatMap(address)]),
  ].join("\n");
};

const address = (view: AddressView): string[] => {
  const head = `    ${view.address} ${view.ehlo} weight ${view.weight}`;
  const w = view.warmup;
  if (w === undefined) return [`${head}: warm`];
  const schedule = `schedule ${w.schedule} since ${w.since}`;
  if (w.warm) return [`${head}: warm (${schedule}, ${w.days} days done)`];
  if (w.day < 1) return [`${head}: warm-up not started (${schedule}): sends nothing yet`];
  const caps = `caps per provider ${w.dailyCap} a day${w.hourlyCap !== undefined ? `, ${w.hourlyCap} an hour` : ""}`;
  return [
    `${head}: warming up, day ${w.day} of ${w.days} (${schedule}), ${caps}`,
    ...(view.providers.length === 0 ? ["      nothing sent today"] : view.providers.map(provider)),
  ];
};

const provider = (p: ProviderUsage): string =>
  `      ${p.provider}: today ${p.day.used} of ${p.day.cap ?? "no cap"}, this hour ${p.hour.used}${p.hour.cap !== undefined ? ` of ${p.hour.cap}` : ""}`;
