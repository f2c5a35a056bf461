// `tern events`: the cluster's events from its JetStream stream, stored ones and (with
// --follow) new ones as they come, filtered by tenant, type and destination domain.
import { parseArgs } from "node:util";
import { followStreamEvents, type EventsStart } from "../cluster/events-client.ts";
import { EventType, eventTypes, type StreamEvent } from "../protocol/events.ts";
import { isSafeToken, makeSubjects } from "../protocol/subjects.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { Schema } from "effect";

const eventsUsage = `usage: tern events [--config FILE] [--follow] [--type T] [--tenant T] [--domain D] [--since SEQ|TIME] [--json] [--app]
  --type      ${eventTypes.join(", ")}
  --since     a stream sequence (42), a time (2026-12-01T10:00:00Z) or an age (90s, 15m, 2h, 7d)
  --follow    keep printing new events; without --since, only events from now on
  --json      one event per line as JSON, with its stream sequence as "seq"
  --app       log in as an application user (replies on _INBOX, or on the tenant's inbox with --tenant)
Without --since and --follow, every stored event is printed.`;

const AGE = /^(\d+)(s|m|h|d)$/;
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** --since: a sequence, an ISO time, or an age before `now`. */
const parseSince = (text: string, now: number): EventsStart => {
  if (/^\d+$/.test(text)) return { seq: Math.max(1, Number(text)) };
  const age = AGE.exec(text);
  if (age) return { time: new Date(now - Number(age[1]) * UNIT_MS[age[2] as keyof typeof UNIT_MS]) };
  const time = new Date(text);
  if (Number.isNaN(time.getTime())) throw new ConfigError(`--since ${text}: expected a stream sequence, an ISO time or an age such as 15m`);
  return { time };
};

/** A share as a percentage with up to two decimals: 0.25 → "25%", 0.0012 → "0.12%". */
const percent = (share: number): string => `${Number((share * 100).toFixed(2))}%`;

const detailOf = (event: StreamEvent): string => {
  switch (event.type) {
    case "node-up":
      return `member=${event.member} version=${event.version} started=${new Date(event.startedAt).toISOString()}`;
    case "node-down":
      return `member=${event.member} version=${event.version}${event.reason ? ` reason=${event.reason}` : ""}`;
    case "accepted":
      return `from=<${event.sender}> size=${event.size}`;
    case "dsn-queued":
      return `notice=${event.notice} action=${event.action} to=<${event.to}>`;
    case "complained":
      return [
        `feedback-type=${event.feedbackType}`,
        ...(event.sender !== undefined ? [`from=<${event.sender}>`] : []),
        ...(event.userAgent ? [`user-agent="${event.userAgent}"`] : []),
        ...(event.reportedBy ? [`reported-by=<${event.reportedBy}>`] : []),
        ...(event.sourceIp ? [`source-ip=${event.sourceIp}`] : []),
      ].join(" ");
    case "site-backoff":
      return [
        `${event.change} site=${event.site}${event.source ? `@${event.source}` : ""} level=${event.level} (was ${event.previousLevel})`,
        `connections=${event.connections} gap=${event.gapMs}ms`,
        ...(event.pausedUntil !== undefined ? [`paused-until=${new Date(event.pausedUntil).toISOString()}`] : []),
        ...(event.rule ? [`rule=${event.rule}`] : []),
        ...(event.reply ? [`reply="${event.reply}"`] : []),
      ].join(" ");
    case "suppressed":
      return `where=${event.where} scope=${event.scope} reason=${event.reason} from=<${event.sender}>`;
    case "reputation-action":
      return [
        `${event.change} ${event.dimension === "source" ? "source" : "sender-domain"}=${event.key} rule=${event.rule}`,
        `${event.kind}-rate=${percent(event.rate)} limit=${percent(event.limit)} messages=${event.messages} window=${event.window}`,
        ...(event.level !== undefined ? [`level=${event.level}`] : []),
        ...(event.pausedUntil !== undefined ? [`paused-until=${new Date(event.pausedUntil).toISOString()}`] : []),
      ].join(" ");
    default:
      return `${event.category ? `category=${event.category} ` : ""}${event.reply}`;
  }
};

/** One event on one line, for people. */
export const renderEvent = (seq: number, event: StreamEvent): string =>
  [
    `#${seq}`,
    new Date(event.time).toISOString(),
    event.type,
    `tenant=${event.tenant}`,
    ...("msg" in event && event.msg ? [`msg=${event.msg}`] : []),
    ...("rcpt" in event ? [`rcpt=<${event.rcpt}>`] : []),
    ...("tags" in event && event.tags?.length ? [`tags=${event.tags.join(",")}`] : []),
    detailOf(event),
  ].join(" ");

export const runEvents = (args: string[]): Promise<number> => eventsCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

/** Runs `tern events`; resolves with the exit code once the stored events are printed (never, with --follow). */
const eventsCommand = async (args: string[], io: Output): Promise<number> => {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string", short: "c" },
      follow: { type: "boolean", short: "f" },
      type: { type: "string" },
      tenant: { type: "string" },
      domain: { type: "string" },
      since: { type: "string" },
      json: { type: "boolean" },
      app: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    io.out(eventsUsage);
    return 0;
  }
  if (values.type !== undefined && !Schema.is(EventType)(values.type)) throw new ConfigError(`--type ${values.type}: expected one of ${eventTypes.join(", ")}`);
  const config = await loadConfig(values.config, process.env);
  const subjects = makeSubjects(config.cluster);
  if (values.tenant !== undefined && !isSafeToken(values.tenant)) throw new ConfigError(`--tenant ${values.tenant}: letters, digits, '-' and '_' only`);
  const inbox = values.app ? (values.tenant !== undefined ? subjects.tenantInbox(values.tenant) : "_INBOX") : subjects.operatorInbox;
  const nc = await connectAsOperator(config, "tern-events", inbox);
  try {
    const events = followStreamEvents(nc, {
      cluster: config.cluster,
      tenant: values.tenant,
      type: values.type as EventType | undefined,
      domain: values.domain,
      start: values.since !== undefined ? parseSince(values.since, Date.now()) : undefined,
      follow: values.follow ?? false,
      onUndecodable: (seq, problem) => io.err(`tern: event #${seq} is not a Tern event: ${problem}`),
    });
    for await (const { seq, event } of events) io.out(values.json ? JSON.stringify({ seq, ...event }) : renderEvent(seq, event));
    return 0;
  } catch (error) {
    io.err(`tern: cannot read events of cluster ${config.cluster}: ${error instanceof Error ? error.message : String(error)}`);
    return 69; // EX_UNAVAILABLE
  } finally {
    await nc.close();
  }
};
