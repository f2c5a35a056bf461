// What `tern pools` and the metrics show of a node's IP pools: each source address, and
// for an address still warming up, its day of warm-up, today's caps and what it sent this
// UTC day and hour to each destination provider. Served over NATS to the operator role
// (every node answers the shared subject, and its own); the figures are the node's own,
// as a source address is bound to one machine.
import { Clock, Effect, Schema, type Scope } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { PoolsReply, PoolsRequest, type AddressView, type PoolView } from "../../protocol/pools.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { decodeFrame, encodeFrame } from "../../protocol/wire.ts";
import { serveEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";
import type { PoolsConfig, SourceAddress } from "./pools.ts";
import { capsAt, warmupDay, type CapWindow } from "./warmup.ts";
import type { WarmupUsage } from "./warmup-usage.ts";
import { gatherAnswers, type GatherOptions } from "../runtime/gather.ts";

export const poolsEndpoint: Endpoint<PoolsRequest, PoolsReply, never> = { request: PoolsRequest, response: PoolsReply, error: Schema.Never };

export interface PoolsStatusDeps {
  readonly nodeId: string;
  readonly pools: PoolsConfig;
  readonly usage: WarmupUsage;
}

const addressView = (source: SourceAddress, usage: WarmupUsage, now: number): AddressView => {
  const { address, ehlo, weight, warmup } = source;
  if (warmup === undefined) return { address, ehlo, weight, providers: [] };
  const caps = capsAt(warmup, now);
  return {
    address,
    ehlo,
    weight,
    warmup: {
      schedule: warmup.schedule,
      since: warmup.since,
      day: warmupDay(warmup, now),
      days: warmup.curve.daily.length,
      warm: caps === undefined,
      ...(caps ? { dailyCap: caps.daily, ...(caps.hourly !== undefined ? { hourlyCap: caps.hourly } : {}) } : {}),
    },
    providers: caps
      ? usage.providersOf(address, now).map((provider) => {
          const used = usage.used(address, provider, now);
          return { provider, day: { cap: caps.daily, used: used.day }, hour: { ...(caps.hourly !== undefined ? { cap: caps.hourly } : {}), used: used.hour } };
        })
      : [],
  };
};

/** The node's pools as `tern pools` shows them, at `now`. */
export const poolsView = (deps: PoolsStatusDeps, now: number): PoolsReply => ({
  node: deps.nodeId,
  at: now,
  pools: Object.entries(deps.pools.pools).map(([pool, sources]): PoolView => ({
    pool,
    overflow: deps.pools.overflow?.[pool] ?? "warm",
    addresses: sources.map((source) => addressView(source, deps.usage, now)),
  })),
});

/** One series of the warm-up gauges. */
export interface WarmupSeries {
  readonly source: string;
  readonly provider: string;
  readonly window: CapWindow;
  readonly cap: number | undefined;
  readonly used: number;
}

/** Cap and usage of every cold address for every provider (`providers`: the table's names and "other"), at `now`. */
export const warmupSeries = (pools: PoolsConfig, usage: WarmupUsage, providers: ReadonlyArray<string>, now: number): ReadonlyArray<WarmupSeries> => {
  const cold = new Map<string, SourceAddress>();
  for (const source of Object.values(pools.pools).flat()) if (capsAt(source.warmup, now) !== undefined) cold.set(source.address, source);
  return [...cold.values()].flatMap((source) => {
    const caps = capsAt(source.warmup, now)!;
    return providers.flatMap((provider): WarmupSeries[] => {
      const used = usage.used(source.address, provider, now);
      return [
        { source: source.address, provider, window: "day", cap: caps.daily, used: used.day },
        { source: source.address, provider, window: "hour", cap: caps.hourly, used: used.hour },
      ];
    });
  });
};

/** Answers on the cluster-wide subject and on this node's own, until the scope closes. */
export const servePoolsStatus = (nc: NatsConnection, subjects: Subjects, deps: PoolsStatusDeps): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const handle = () => Effect.map(Clock.currentTimeMillis, (now) => ({ value: poolsView(deps, now) }));
    yield* servedInScope((run) => serveEndpoint(nc, subjects.poolsStatus, poolsEndpoint, handle, { run }));
    yield* servedInScope((run) => serveEndpoint(nc, subjects.poolsStatusOf(deps.nodeId), poolsEndpoint, handle, { run }));
  });

export type PoolsAnswer = { readonly ok: true; readonly reply: PoolsReply } | { readonly ok: false; readonly node: string; readonly detail: string };

/** Asks one node by name, or every node (answers gathered as ../runtime/gather.ts says). */
export const askPools = async (
  nc: NatsConnection,
  subjects: Subjects,
  options: GatherOptions & { readonly node?: string | undefined },
): Promise<ReadonlyArray<PoolsAnswer>> => {
  const payload = encodeFrame(Schema.encodeSync(PoolsRequest)({ _tag: "Pools" }));
  if (options.node !== undefined) {
    const msg = await nc.request(subjects.poolsStatusOf(options.node), payload, { timeout: options.timeoutMs });
    return [interpret(msg.data, options.node)];
  }
  return gatherAnswers(nc, subjects.poolsStatus, payload, (data) => interpret(data, "?"), (answer) => (answer.ok ? answer.reply.node : answer.node), options);
};

const interpret = (data: Uint8Array, node: string): PoolsAnswer => {
  const frame = decodeFrame(data);
  if (typeof frame === "string") return { ok: false, node, detail: `malformed reply: ${frame}` };
  const wire = frame.json as { ok?: boolean; value?: unknown; malformed?: string; internal?: string };
  if (wire.ok !== true) return { ok: false, node, detail: wire.malformed ?? wire.internal ?? "unknown failure" };
  const reply = Schema.decodeUnknownExit(PoolsReply)(wire.value);
  return reply._tag === "Success" ? { ok: true, reply: reply.value } : { ok: false, node, detail: "reply does not match the protocol" };
};
