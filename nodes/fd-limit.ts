// Do the configured connection caps fit in the process's file-descriptor limit? Every
// SMTP, POP3, IMAP and outbound connection holds a descriptor, and so do LMDB, NATS, HTTP and
// DNS. When the caps add up to more than the limit, a flood of idle clients can take the
// descriptors the rest of the node needs and take it offline (SMTP and /readyz too),
// although every cap is respected. Checked once at start; the result is a warning, not
// a refusal to start: the operator raises the limit or lowers the caps.
import { readFile } from "node:fs/promises";
import { Effect } from "effect";
import type { NodeConfig } from "./config.ts";
import type { Log } from "./log.ts";

/**
 * Descriptors the node needs besides its connections, by consumer. Generous on purpose:
 * running out costs the node, a spare hundred descriptors cost nothing.
 */
export const RESERVED_DESCRIPTORS = {
  /** stdio, epoll, libuv's eventfds and thread-pool pipes, loaded modules, TLS files, the embedded NATS server's pipes. */
  runtime: 64,
  /** The environment's data and lock files. */
  lmdb: 8,
  /** One client connection (a reconnect replaces it). */
  nats: 4,
  /** /metrics scrapes and /readyz probes, kept alive by their clients. */
  http: 64,
  /**
   * One socket per query in flight: the resolver actor works on 64 domains at once
   * (actors/resolver/actor.ts), each with up to 4 MX hosts × A and AAAA (mail-route.ts).
   */
  dns: 64 * 4 * 2,
} as const;

export interface DescriptorBudget {
  /** The listeners' overall caps: one descriptor per open session. */
  readonly smtp: number;
  readonly smtps: number;
  readonly pop3: number;
  /** imap.maxConnections: one cap shared by the IMAP and IMAPS ports. */
  readonly imap: number;
  /** delivery.maxConnections: outbound SMTP connections. */
  readonly delivery: number;
  readonly reserved: number;
  readonly total: number;
}

export const descriptorBudget = (config: Pick<NodeConfig, "smtp" | "pop3" | "imap" | "delivery">): DescriptorBudget => {
  const reserved = Object.values(RESERVED_DESCRIPTORS).reduce((sum, n) => sum + n, 0);
  const connections = {
    smtp: config.smtp.maxConnections,
    smtps: config.smtp.maxSmtpsConnections,
    pop3: config.pop3.maxConnections,
    imap: config.imap.maxConnections,
    delivery: config.delivery.maxConnections,
  };
  const total = connections.smtp + connections.smtps + connections.pop3 + connections.imap + connections.delivery + reserved;
  return { ...connections, reserved, total };
};

/**
 * The soft limit on open files from the text of /proc/<pid>/limits; Infinity for
 * "unlimited", undefined when the line is missing or unreadable.
 */
export const parseOpenFilesLimit = (procLimits: string): number | undefined => {
  const soft = /^Max open files\s+(\S+)/m.exec(procLimits)?.[1];
  if (soft === undefined) return undefined;
  if (soft === "unlimited") return Infinity;
  const limit = Number(soft);
  return Number.isSafeInteger(limit) && limit >= 0 ? limit : undefined;
};

export interface DescriptorShortfall {
  readonly limit: number;
  readonly budget: DescriptorBudget;
}

/** A shortfall when the budget does not fit in the limit; undefined when it fits or the limit is unknown. */
export const checkDescriptorLimit = (budget: DescriptorBudget, limit: number | undefined): DescriptorShortfall | undefined =>
  limit !== undefined && budget.total > limit ? { limit, budget } : undefined;

/**
 * The soft limit of this process, on Linux. Read after start on purpose: Node raises
 * its soft limit to the hard one at startup, so `ulimit -Sn` in the shell is not what
 * applies; `ulimit -n` (which lowers both) or systemd's LimitNOFILE is.
 */
const readOpenFilesLimit: Effect.Effect<number | undefined> = Effect.tryPromise(() => readFile("/proc/self/limits", "utf8")).pipe(
  Effect.map(parseOpenFilesLimit),
  Effect.orElseSucceed(() => undefined), // not Linux (no /proc): nothing to check against
);

/** Logs `node.fd-limit.low` (level warn) when the caps cannot fit; returns the shortfall, if any. */
export const warnIfDescriptorsShort = Effect.fn("Node.warnIfDescriptorsShort")(function* (
  config: Pick<NodeConfig, "smtp" | "pop3" | "imap" | "delivery">,
  log: Log,
) {
  const shortfall = checkDescriptorLimit(descriptorBudget(config), yield* readOpenFilesLimit);
  if (shortfall !== undefined) {
    const { limit, budget } = shortfall;
    log("node.fd-limit.low", {
      level: "warn",
      limit,
      needed: budget.total,
      smtp: budget.smtp,
      smtps: budget.smtps,
      pop3: budget.pop3,
      imap: budget.imap,
      delivery: budget.delivery,
      reserved: budget.reserved,
      text:
        "raise the open-files limit (ulimit -n, systemd LimitNOFILE) or lower smtp.maxConnections, smtp.maxSmtpsConnections, pop3.maxConnections, imap.maxConnections, delivery.maxConnections",
    });
  }
  return shortfall;
});
