// Node configuration: a JSON file validated at start, then environment overrides.
// Every field is optional in the file; defaults give a one-node cluster on
// unprivileged loopback ports with data in ./data.
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { readFile } from "node:fs/promises";
import { configProblems } from "./config-check.ts";
import { Cause, Exit, Schema } from "effect";
import { isSafeToken } from "../protocol/subjects.ts";
import { domainOf, domainSyntaxProblem, localPartOf } from "../actors/common/domains.ts";
import { parseCidr } from "../actors/common/networks.ts";
import { isPasswordHash, type UserRecord } from "../actors/users/store.ts";
import type { DeliveryConfig } from "../actors/delivery/config.ts";
import type { DkimConfig } from "../actors/dkim/keys.ts";
import type { InboundPolicy } from "../actors/authentication/policy.ts";
import { MAX_BLOB_BYTES } from "../actors/runtime/blobs.ts";
import { plaintextServers, type NatsAuth, type NatsSecurity, type SecretSource } from "../cluster/nats-auth.ts";
import { BudgetLimits } from "../protocol/site-budget.ts";
import { OTHER_PROVIDER, patternsOf, starterProviders } from "../actors/delivery/providers.ts";
import type { PoolsConfig, SourceAddress } from "../actors/delivery/pools.ts";
import { parseDay, type SourceWarmup, type WarmupSchedule } from "../actors/delivery/warmup.ts";
import type { VerpMode } from "../actors/feedback/token.ts";
import type { Threshold } from "../actors/delivery/reputation-rules.ts";
import type { RateKind } from "../actors/delivery/reputation-window.ts";

const Port = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }));
const Positive = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1));
/** A site budget limits something: at least one of its limits is given. `perSource` keeps it per source address. */
const SiteBudgetRuleConfig = Schema.Struct({ ...BudgetLimits.fields, perSource: Schema.optional(Schema.Boolean) }).check(
  Schema.makeFilter(
    ({ perSource: _, ...limits }: { readonly perSource?: boolean | undefined } & BudgetLimits) =>
      Object.values(limits).some((limit) => limit !== undefined) ||
      "a site budget needs connections, messagesPerSecond, messagesPerHour, connectionsPerMinute or messagesPerConnection",
  ),
);
const Token = Schema.String.check(Schema.makeFilter((s: string) => isSafeToken(s) || "letters, digits, '-' and '_' only"));
const IpAddress = Schema.String.check(Schema.makeFilter((s: string) => isIP(s) !== 0 || "expected an IPv4 or IPv6 address"));
const HostName = Schema.String.check(Schema.makeFilter((s: string) => /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(s) || "expected a host name"));
const WarmupDate = Schema.String.check(Schema.makeFilter((s: string) => parseDay(s) !== undefined || "expected a date YYYY-MM-DD"));
const SourceAddressConfig = Schema.Struct({
  address: IpAddress,
  ehlo: HostName,
  weight: Schema.optional(Positive),
  /** A cold address: the schedule (a name of delivery.warmupSchedules) and its first day. */
  warmup: Schema.optional(Schema.Struct({ schedule: Token, since: WarmupDate })),
});
const SourceAddresses = Schema.Array(SourceAddressConfig).check(Schema.isMinLength(1));
/** A pool: its addresses, or its addresses with what a cold one does at its cap (actors/delivery/pools.ts). */
const PoolConfig = Schema.Union([SourceAddresses, Schema.Struct({ addresses: SourceAddresses, overflow: Schema.optional(Schema.Literals(["warm", "wait"])) })]);
/** A warm-up curve (actors/delivery/warmup.ts): daily caps by day, and hourly ones given or derived (`spreadHours`). */
const WarmupScheduleConfig = Schema.Struct({
  daily: Schema.Array(Positive).check(Schema.isMinLength(1)),
  hourly: Schema.optional(Schema.Array(Positive)),
  /** Hourly cap = the day's cap over this many hours (rounded up). */
  spreadHours: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 24 }))),
});
const PoolRuleConfig = Schema.Union([
  Schema.Struct({ pool: Token, senderDomain: Schema.String }),
  Schema.Struct({ pool: Token, user: Schema.String }),
  Schema.Struct({ pool: Token, header: Schema.String, value: Schema.String }),
]);
/** A rate limit: a share of messages, 0.05 for 5 %. */
const Share = Schema.Number.check(Schema.makeFilter((n: number) => (n > 0 && n <= 1) || "expected a share above 0 and at most 1 (0.05 is 5 %)"));
/** A reputation threshold (actors/delivery/reputation-rules.ts): at least one rate. */
const ThresholdConfig = Schema.Struct({
  /** Names it in events, logs and `tern reputation` (default `<dimension>-<rates>-<window>`). */
  name: Schema.optional(Token),
  dimension: Schema.Literals(["source", "sender_domain"]),
  window: Schema.optional(Schema.Literals(["1h", "24h"])),
  bounceRate: Schema.optional(Share),
  complaintRate: Schema.optional(Share),
  deferralRate: Schema.optional(Share),
  /** Final outcomes (delivered + bounced) in the window before the threshold acts. */
  minMessages: Schema.optional(Positive),
  action: Schema.Literals(["slow", "pause"]),
  /** How long a pause lasts. */
  pauseMs: Schema.optional(Positive),
  /** The back-off level a slow holds (1–5: as a site's, see delivery.throttleGapMs). */
  level: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 5 }))),
  /** A slow ends once every rate is below this share of its limit. */
  recoverRatio: Schema.optional(Share),
}).check(
  Schema.makeFilter(
    (t: { readonly bounceRate?: number | undefined; readonly complaintRate?: number | undefined; readonly deferralRate?: number | undefined }) =>
      t.bounceRate !== undefined || t.complaintRate !== undefined || t.deferralRate !== undefined || "a threshold needs bounceRate, complaintRate or deferralRate",
  ),
);
/** `host:port`, with an IPv6 address in brackets (`[2001:db8::53]:53`). */
const HostPort = Schema.String.check(
  Schema.makeFilter((s: string) => /^[^\s:[\]]+:\d{1,5}$/.test(s) || (/^\[([^\]]+)\]:\d{1,5}$/.test(s) && isIP(s.slice(1, s.indexOf("]"))) === 6) || "expected host:port, or [IPv6 address]:port"),
);
/** Where a listener binds: a HostPort whose port is one. */
const ListenAddress = HostPort.check(Schema.makeFilter((s: string) => Number(s.slice(s.lastIndexOf(":") + 1)) <= 65535 || "expected a port between 0 and 65535"));
const Cidr = Schema.String.check(Schema.makeFilter((s: string) => parseCidr(s) !== undefined || "expected an IPv4 or IPv6 CIDR such as 127.0.0.0/8"));

const Address = Schema.String.check(Schema.makeFilter((s: string) => /^[^@\s]+@[^@\s]+$/.test(s) || "expected local@domain"));

const User = Schema.Struct({
  address: Address,
  /** Plain password: development only; hashed in memory at start. */
  password: Schema.optional(Schema.String),
  /** scrypt hash as written by `tern user hash`. */
  passwordHash: Schema.optional(Schema.String.check(Schema.makeFilter((s: string) => isPasswordHash(s) || "expected scrypt$N$r$p$salt$hash"))),
  /** Node that holds this user's mailbox; unset: the first node that receives mail for it. */
  home: Schema.optional(Token),
  /** Other addresses the user may send as (MAIL FROM) when authenticated. */
  aliases: Schema.optional(Schema.Array(Schema.String)),
  /** Mailbox quota in bytes (overrides mailbox.quotaBytes); over it, delivery defers with 4.2.2. */
  quotaBytes: Schema.optional(Positive),
}).check(Schema.makeFilter((u: { password?: string; passwordHash?: string }) => u.password !== undefined || u.passwordHash !== undefined || "needs password or passwordHash"));

/** RFC 6376 §3.1: a selector is one or more DNS labels (`2026-11`, `mail.eu`). */
const DkimSelector = Schema.String.check(
  Schema.makeFilter((s: string) => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/i.test(s) || "expected DNS labels: letters, digits, '-' and '_', joined by '.'"),
);
const DkimKeyFile = Schema.Struct({
  selector: DkimSelector,
  algorithm: Schema.Literals(["rsa-sha256", "ed25519-sha256"]),
  /** The private key, PEM (PKCS#8 or PKCS#1); read at start, never logged. */
  keyFile: Schema.String,
});

/** JetStream keeps a stream on at most 5 servers; more than 1 needs a clustered NATS. */
const Replicas = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 5 }));

const ConfigFile = Schema.Struct({
  nodeId: Schema.optional(Token),
  cluster: Schema.optional(Token),
  hostname: Schema.optional(Schema.String),
  dataDir: Schema.optional(Schema.String),
  nats: Schema.optional(
    Schema.Struct({
      servers: Schema.optional(Schema.Array(Schema.String)),
      embedded: Schema.optional(Schema.Boolean),
      /** Credentials: secrets only from files (or the environment, see environmentOverrides), never inline. */
      user: Schema.optional(Schema.String),
      passwordFile: Schema.optional(Schema.String),
      /** Name of the environment variable holding the password (TERN_NATS_PASSWORD sets this). */
      passwordEnv: Schema.optional(Schema.String),
      tokenFile: Schema.optional(Schema.String),
      tokenEnv: Schema.optional(Schema.String),
      nkeySeedFile: Schema.optional(Schema.String),
      nkeySeedEnv: Schema.optional(Schema.String),
      credsFile: Schema.optional(Schema.String),
      tls: Schema.optional(
        Schema.Struct({ caFile: Schema.optional(Schema.String), certFile: Schema.optional(Schema.String), keyFile: Schema.optional(Schema.String) }),
      ),
      /** The network between nodes and NATS is private (VPN, one host): mail may cross it without TLS. */
      trustedLink: Schema.optional(Schema.Boolean),
      /** Replicas of everything the node creates in JetStream (KV buckets, the events stream): 3 on a three-server NATS cluster. */
      replicas: Schema.optional(Replicas),
    }),
  ),
  listen: Schema.optional(
    Schema.Struct({
      host: Schema.optional(Schema.String),
      smtp: Schema.optional(Port),
      smtps: Schema.optional(Port),
      pop3: Schema.optional(Port),
      imap: Schema.optional(Port),
      imaps: Schema.optional(Port),
      http: Schema.optional(Port),
    }),
  ),
  /** The HTTP endpoint (/metrics, /healthz, /readyz) on an address of its own, apart from the mail listeners. */
  http: Schema.optional(Schema.Struct({ listen: Schema.optional(ListenAddress) })),
  metrics: Schema.optional(
    Schema.Struct({
      /** Destinations `tern_queue_depth` lists by name; the rest are summed under "other". */
      queueDestinations: Schema.optional(Positive),
    }),
  ),
  tls: Schema.optional(Schema.Struct({ certFile: Schema.optional(Schema.String), keyFile: Schema.optional(Schema.String) })),
  smtp: Schema.optional(
    Schema.Struct({
      bareLineEndings: Schema.optional(Schema.Literals(["reject", "normalize"])),
      /** A line over 998 octets (RFC 5321 §4.5.3.1.6): refuse the message at DATA, or accept it and encode it before relaying. */
      longLines: Schema.optional(Schema.Literals(["reject", "encode"])),
      accept8bitWithoutBodyParameter: Schema.optional(Schema.Boolean),
      authRequiresTls: Schema.optional(Schema.Boolean),
      idleTimeoutMs: Schema.optional(Positive),
      maxErrors: Schema.optional(Positive),
      /** Open sessions on the plain listener (listen.smtp), all clients together; above it 421 4.7.0. */
      maxConnections: Schema.optional(Positive),
      /** Open sessions on the implicit-TLS listener (listen.smtps), counted apart so an MX flood cannot lock out submission. */
      maxSmtpsConnections: Schema.optional(Positive),
      maxConnectionsPerIp: Schema.optional(Positive),
      maxMessagesPerIpPerMinute: Schema.optional(Positive),
      maxAuthFailuresPerIp: Schema.optional(Positive),
      maxAuthFailuresPerUserAndIp: Schema.optional(Positive),
      authFailureWindowMs: Schema.optional(Positive),
      /** Domain → address receiving mail for unknown users of that local domain. */
      catchAll: Schema.optional(Schema.Record(Schema.String, Schema.String)),
    }),
  ),
  localDomains: Schema.optional(Schema.Array(Schema.String)),
  users: Schema.optional(Schema.Array(User)),
  /** Where mail for postmaster goes when no user has that name (RFC 5321 §4.5.1: it must be accepted). */
  postmaster: Schema.optional(Address),
  /** Failed logins per account from every IP, all protocols together: past a count, attempts wait. */
  logins: Schema.optional(
    Schema.Struct({
      accountDelayAfterFailures: Schema.optional(Positive),
      accountDelayMs: Schema.optional(Positive),
      accountMaxDelayMs: Schema.optional(Positive),
      accountWindowMs: Schema.optional(Positive),
    }),
  ),
  trustedNetworks: Schema.optional(Schema.Array(Cidr)),
  /** DKIM signing of submitted and relayed mail, per sender domain (README "DKIM signing"). */
  dkim: Schema.optional(
    Schema.Struct({
      /** Signing domain → its selectors and keys; two selectors during a key rotation, each signing every message. */
      domains: Schema.Record(Schema.String, Schema.Array(DkimKeyFile)),
      /** Header fields to sign (default: From, To, Cc, Subject, Date, Message-ID, Reply-To, MIME and List-* fields…). */
      headers: Schema.optional(Schema.Array(Schema.String)),
    }),
  ),
  /** Authentication of inbound (MX) mail: SPF, DKIM, ARC and DMARC, README "Inbound authentication". */
  inbound: Schema.optional(
    Schema.Struct({
      authenticate: Schema.optional(Schema.Boolean),
      /** RFC 8601 authserv-id of the Authentication-Results fields written (default: hostname). */
      authservId: Schema.optional(HostName),
      timeoutMs: Schema.optional(Positive),
      maxHeaderBytes: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1024))),
      /** Recipient domain or "*" → how far a failing message's DMARC policy is honoured. */
      dmarc: Schema.optional(Schema.Record(Schema.String, Schema.Literals(["none", "quarantine", "reject"]))),
    }),
  ),
  dns: Schema.optional(
    Schema.Struct({
      servers: Schema.optional(Schema.Array(HostPort)),
      timeoutMs: Schema.optional(Positive),
      tries: Schema.optional(Positive),
      cacheEntries: Schema.optional(Positive),
      minTtlSec: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
      maxTtlSec: Schema.optional(Positive),
      maxNegativeTtlSec: Schema.optional(Positive),
      addressFamilies: Schema.optional(Schema.Literals(["ipv4", "ipv6", "ipv4-first", "ipv6-first"])),
      /** Non-public networks MX targets may still resolve to (loopback, private, link-local are refused otherwise). */
      allowedTargetNetworks: Schema.optional(Schema.Array(Cidr)),
      ptrTimeoutMs: Schema.optional(Positive),
    }),
  ),
  delivery: Schema.optional(
    Schema.Struct({
      remotePort: Schema.optional(Port),
      connectionsPerSite: Schema.optional(Positive),
      maxInFlight: Schema.optional(Positive),
      pollMs: Schema.optional(Positive),
      retryBaseMs: Schema.optional(Positive),
      retryMaxMs: Schema.optional(Positive),
      connectTimeoutMs: Schema.optional(Positive),
      /** RFC 5321 §4.5.3.2: the 220 greeting. */
      greetingTimeoutMs: Schema.optional(Positive),
      /** Silence allowed after any SMTP command (the longest RFC 5321 wait is 10 minutes, after DATA's dot). */
      socketTimeoutMs: Schema.optional(Positive),
      messagesPerConnection: Schema.optional(Positive),
      maxRecipientsPerTransaction: Schema.optional(Positive),
      connectionIdleMs: Schema.optional(Positive),
      /** Outbound SMTP connections of this node, all sites together. */
      maxConnections: Schema.optional(Positive),
      /** MX host name (or ".suffix") → connections per node for sites with such a host. */
      siteConnections: Schema.optional(Schema.Record(Schema.String, Positive)),
      /**
       * MX host name (or ".suffix"), `provider:<name>` or `domain:<recipient domain>` → limits
       * the whole cluster keeps together for such mail (per source address with `perSource`).
       */
      siteBudgets: Schema.optional(Schema.Record(Schema.String, SiteBudgetRuleConfig)),
      /** Mailbox providers by MX host patterns, added to (or replacing entries of) the starter table; site budgets may name them as `provider:<name>`. */
      providers: Schema.optional(Schema.Record(Token, Schema.Array(Schema.String).check(Schema.isMinLength(1)))),
      /** How long a node's lease on a share of a site budget lasts unless renewed. */
      siteBudgetLeaseMs: Schema.optional(Positive),
      /** IP pools: name → source addresses, each with its EHLO name (actors/delivery/pools.ts). */
      pools: Schema.optional(Schema.Record(Token, PoolConfig)),
      /** Warm-up curves by name, for the `warmup` of cold pool addresses. */
      warmupSchedules: Schema.optional(Schema.Record(Token, WarmupScheduleConfig)),
      /** Which pool a message leaves from: the first rule that matches, else `defaultPool`. */
      poolRules: Schema.optional(Schema.Array(PoolRuleConfig)),
      defaultPool: Schema.optional(Token),
      /** Domains (".example.org": and subdomains) whose mail is only sent over TLS. */
      requireTls: Schema.optional(Schema.Array(Schema.String)),
      maxInFlightPerQueue: Schema.optional(Positive),
      /** Queue lifetime: recipients still deferred after this age bounce. */
      maxAgeMs: Schema.optional(Positive),
      /** Age after which a still-deferred message sends its one delay notice. */
      delayNoticeMs: Schema.optional(Positive),
      /** A destination that rate-limits us or cannot be reached is left alone this long (default: retryBaseMs). */
      holdMs: Schema.optional(Positive),
      /** A message that waited this long for a connection to its site is deferred unsent. */
      maxQueueWaitMs: Schema.optional(Positive),
      /** JSON rules file for bounce classification. */
      bounceRulesFile: Schema.optional(Schema.String),
      /** JSON rules file for automatic back-off: replies that slow or pause a site, added to (or changing) the starter table. */
      throttleRulesFile: Schema.optional(Schema.String),
      /** A backed-off site steps back up one level after this long without a throttling reply. */
      throttleRecoveryMs: Schema.optional(Positive),
      /** Least time between two messages to a site slowed to level 1 (doubled at each further level). */
      throttleGapMs: Schema.optional(Positive),
      /** Failure DSNs carry the whole message up to this size, else its headers. */
      dsnMaxReturnBytes: Schema.optional(Positive),
    }),
  ),
  limits: Schema.optional(Schema.Struct({ maxMessageBytes: Schema.optional(Positive), maxRecipients: Schema.optional(Positive) })),
  pop3: Schema.optional(
    Schema.Struct({
      /** Clients allowed to log in without STLS (default loopback only). */
      plaintextLoginNetworks: Schema.optional(Schema.Array(Cidr)),
      /** Open sessions, all clients together; above it -ERR [SYS/TEMP]. */
      maxConnections: Schema.optional(Positive),
      /** Maildrop lock lease; a session's node renews it every third of this. */
      lockLeaseMs: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 3_000, maximum: 3_600_000 }))),
      maxFailedLoginsPerIp: Schema.optional(Positive),
      maxFailedLoginsPerUserAndIp: Schema.optional(Positive),
      failedLoginWindowMs: Schema.optional(Positive),
      failedLoginDelayMs: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
    }),
  ),
  imap: Schema.optional(
    Schema.Struct({
      /** Clients allowed to LOGIN without STARTTLS (default: pop3.plaintextLoginNetworks). */
      plaintextLoginNetworks: Schema.optional(Schema.Array(Cidr)),
      /** Open sessions over both listeners; above it `* BYE [UNAVAILABLE]`. */
      maxConnections: Schema.optional(Positive),
      maxFailedLoginsPerIp: Schema.optional(Positive),
      maxFailedLoginsPerUserAndIp: Schema.optional(Positive),
      failedLoginWindowMs: Schema.optional(Positive),
      failedLoginDelayMs: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
      /** Autologout after this long without a command (RFC 3501: at least 30 minutes). */
      idleTimeoutMs: Schema.optional(Positive),
    }),
  ),
  mailbox: Schema.optional(
    Schema.Struct({
      /** Default quota in bytes for every user (unset: none). */
      quotaBytes: Schema.optional(Positive),
      /** A mailbox actor idle this long is passivated. */
      idleMs: Schema.optional(Positive),
      /** Time allowed for an ask to the owner node (bodies add 1 s per MB). */
      askTimeoutMs: Schema.optional(Positive),
      /** Time allowed for one step of `tern mailbox move` between the two nodes (a batch of the copy, the freeze). */
      moveStepTimeoutMs: Schema.optional(Positive),
    }),
  ),
  membership: Schema.optional(
    Schema.Struct({
      /** How often the node rewrites its record in the members bucket. */
      heartbeatMs: Schema.optional(Positive),
      /** The members bucket's TTL: a node silent this long is gone (at least twice heartbeatMs). */
      ttlMs: Schema.optional(Positive),
    }),
  ),
  status: Schema.optional(
    Schema.Struct({
      /** How long `tern status` (and the status API) still answers for recipients that left the queue (delivered, bounced…). */
      keepFinishedMs: Schema.optional(Positive),
    }),
  ),
  /** The NATS application API (docs/api.md). */
  api: Schema.optional(
    Schema.Struct({
      /** Tenants and the sender domains each owns; a tenant's applications submit on `api.v1.<name>.…`. */
      tenants: Schema.optional(Schema.Array(Schema.Struct({ name: Token, senderDomains: Schema.Array(Schema.String) }))),
      /** Submits per tenant per minute on each node; beyond: RateLimited. */
      maxSubmitsPerTenantPerMinute: Schema.optional(Positive),
      /** Submits being committed at once on each node; beyond: Busy. */
      maxConcurrentSubmits: Schema.optional(Positive),
      /** Chunked uploads open at once on each node; beyond: Busy. */
      maxUploads: Schema.optional(Positive),
      /** An upload without a chunk for this long is discarded. */
      uploadIdleTimeoutMs: Schema.optional(Positive),
      /** How far ahead a send-at time may be. */
      maxSendAtAheadMs: Schema.optional(Positive),
      /** How long an idempotency key is remembered. */
      idempotencyTtlMs: Schema.optional(Positive),
    }),
  ),
  transfers: Schema.optional(
    Schema.Struct({
      /** Bytes of large frames (bodies over NATS's max payload) this node pulls at once from other nodes. */
      maxPullBytes: Schema.optional(Positive),
      /** The same, from any one node. */
      maxPullBytesPerPeer: Schema.optional(Positive),
      /** Pulls in progress at once. */
      maxConcurrentPulls: Schema.optional(Positive),
    }),
  ),
  /** Bounces and complaints that come back (README "Bounces and complaints"). */
  feedback: Schema.optional(
    Schema.Struct({
      /** Envelope sender of outbound mail: its own, or a VERP address per message or per recipient at bounceDomain. */
      verp: Schema.optional(Schema.Literals(["off", "message", "recipient"])),
      /** The domain of VERP addresses: its MX must be Tern; not a local domain. */
      bounceDomain: Schema.optional(Schema.String),
      /** Addresses where feedback-loop reports (ARF) arrive. */
      fblAddresses: Schema.optional(Schema.Array(Address)),
      /** The key(s) of VERP tokens and X-Tern-Id: a file, one key per line, the first signs; never inline. */
      keyFile: Schema.optional(Schema.String),
      /** Name of the environment variable holding the key(s) (TERN_FEEDBACK_KEY sets this). */
      keyEnv: Schema.optional(Schema.String),
    }),
  ),
  /** Reputation figures and the thresholds that slow or pause a source address or sender domain (README "Reputation"). */
  reputation: Schema.optional(
    Schema.Struct({
      /** Sender domains counted by name (in the order first seen); the rest count together as "other". */
      maxSenderDomains: Schema.optional(Positive),
      thresholds: Schema.optional(Schema.Array(ThresholdConfig)),
    }),
  ),
  /** The JetStream stream of events (every node creates it and puts its limits right: keep these the same on every node). */
  events: Schema.optional(
    Schema.Struct({
      /** Events older than this are dropped from the stream. */
      maxAgeSec: Schema.optional(Positive),
      /** The stream drops its oldest events beyond this size. */
      maxBytes: Schema.optional(Positive),
      /** A republished event (same id) within this window is dropped by JetStream; at least 120. */
      duplicateWindowSec: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(120))),
      /** Stream replicas; nats.replicas unless set here. */
      replicas: Schema.optional(Replicas),
    }),
  ),
  /** The cluster-wide suppression list (README "Suppression list"). */
  suppression: Schema.optional(
    Schema.Struct({
      /** false: no checks and no automatic adds on this node, and it serves no suppression admin requests. */
      enabled: Schema.optional(Schema.Boolean),
      /** Where an automatic add applies: "sender-domain" (mail from the domain that bounced or drew the complaint), or "global". */
      scope: Schema.optional(Schema.Literals(["global", "sender-domain"])),
      /** What adds a recipient by itself: hard bounces of a bad mailbox or domain, complaints. */
      autoAdd: Schema.optional(Schema.Array(Schema.Literals(["bad-mailbox", "bad-domain", "complaint"]))),
      /** How long a starting node waits for its view of the list before it takes mail without it. */
      loadTimeoutMs: Schema.optional(Positive),
    }),
  ),
});
type ConfigFile = typeof ConfigFile.Type;

export interface NodeConfig {
  readonly nodeId: string;
  readonly cluster: string;
  readonly hostname: string;
  readonly dataDir: string;
  /** The file the config was read from (SIGHUP reads it again); undefined on defaults. */
  readonly configFile: string | undefined;
  readonly nats: NatsSecurity & {
    readonly servers: ReadonlyArray<string>;
    readonly embedded: boolean;
    readonly trustedLink: boolean;
    /** Replicas of the KV buckets the node creates (the events stream has its own, defaulting to this). */
    readonly replicas: number;
  };
  /** Where the HTTP endpoint listens: `http.listen`, else `listen.host` and `listen.http`. */
  readonly http: { readonly host: string; readonly port: number };
  readonly metrics: { readonly queueDestinations: number };
  readonly listen: {
    readonly host: string;
    readonly smtp: number;
    readonly smtps: number;
    readonly pop3: number;
    readonly imap: number;
    readonly imaps: number;
    readonly http: number;
  };
  readonly smtp: {
    readonly bareLineEndings: "reject" | "normalize";
    readonly longLines: "reject" | "encode";
    readonly accept8bitWithoutBodyParameter: boolean;
    readonly authRequiresTls: boolean;
    readonly idleTimeoutMs: number;
    readonly maxErrors: number;
    readonly maxConnections: number;
    readonly maxSmtpsConnections: number;
    readonly maxConnectionsPerIp: number;
    readonly maxMessagesPerIpPerMinute: number;
    readonly maxAuthFailuresPerIp: number;
    readonly maxAuthFailuresPerUserAndIp: number;
    readonly authFailureWindowMs: number;
    readonly catchAll: Readonly<Record<string, string>>;
  };
  /** Certificate for STARTTLS/STLS and implicit TLS; unset: a generated self-signed one. */
  readonly tls: { readonly certFile?: string | undefined; readonly keyFile?: string | undefined };
  readonly localDomains: ReadonlyArray<string>;
  readonly users: ReadonlyArray<UserRecord>;
  /** Where postmaster's mail goes when no user has that name (catch-all first, for postmaster@<domain>); undefined only without users. */
  readonly postmaster: string | undefined;
  readonly logins: {
    readonly accountDelayAfterFailures: number;
    readonly accountDelayMs: number;
    readonly accountMaxDelayMs: number;
    readonly accountWindowMs: number;
  };
  readonly trustedNetworks: ReadonlyArray<string>;
  /** Keys per signing domain (lower case); no domains: nothing is signed. */
  readonly dkim: DkimConfig;
  readonly inbound: {
    /** False: MX mail is neither checked nor given an Authentication-Results field, and none is removed. */
    readonly authenticate: boolean;
    readonly authservId: string;
    /** How long the checks may still take once a message has ended (DNS lookups after that are temperror). */
    readonly timeoutMs: number;
    /** MX mail whose header section is longer is refused (552 5.3.4): the checks hold it in memory. */
    readonly maxHeaderBytes: number;
    /** Recipient domain (lower case) or "*" → local DMARC policy. */
    readonly dmarc: Readonly<Record<string, InboundPolicy>>;
  };
  readonly dns: {
    readonly servers: ReadonlyArray<{ host: string; port: number }>;
    readonly timeoutMs: number;
    readonly tries: number;
    readonly cacheEntries: number;
    readonly minTtlSec: number;
    readonly maxTtlSec: number;
    readonly maxNegativeTtlSec: number;
    readonly addressFamilies: "ipv4" | "ipv6" | "ipv4-first" | "ipv6-first";
    readonly allowedTargetNetworks: ReadonlyArray<string>;
    readonly ptrTimeoutMs: number;
  };
  readonly delivery: DeliveryConfig;
  readonly limits: { readonly maxMessageBytes: number; readonly maxRecipients: number };
  readonly pop3: {
    readonly plaintextLoginNetworks: ReadonlyArray<string>;
    readonly maxConnections: number;
    readonly lockLeaseMs: number;
    readonly maxFailedLoginsPerIp: number;
    readonly maxFailedLoginsPerUserAndIp: number;
    readonly failedLoginWindowMs: number;
    readonly failedLoginDelayMs: number;
  };
  readonly imap: {
    readonly plaintextLoginNetworks: ReadonlyArray<string>;
    readonly maxConnections: number;
    readonly maxFailedLoginsPerIp: number;
    readonly maxFailedLoginsPerUserAndIp: number;
    readonly failedLoginWindowMs: number;
    readonly failedLoginDelayMs: number;
    readonly idleTimeoutMs: number;
  };
  readonly mailbox: {
    readonly quotaBytes: number | undefined;
    /** Per-user quotas from users[].quotaBytes. */
    readonly quotas: Readonly<Record<string, number>>;
    readonly idleMs: number;
    readonly askTimeoutMs: number;
    readonly moveStepTimeoutMs: number;
  };
  /** Cluster membership: heartbeats in the members bucket, whose TTL drops silent nodes. */
  readonly membership: { readonly heartbeatMs: number; readonly ttlMs: number };
  /** Message status: finished recipients are remembered this long after their message's last change. */
  readonly status: { readonly keepFinishedMs: number };
  readonly api: {
    readonly tenants: ReadonlyArray<{ readonly name: string; readonly senderDomains: ReadonlyArray<string> }>;
    readonly maxSubmitsPerTenantPerMinute: number;
    readonly maxConcurrentSubmits: number;
    readonly maxUploads: number;
    readonly uploadIdleTimeoutMs: number;
    readonly maxSendAtAheadMs: number;
    readonly idempotencyTtlMs: number;
  };
  /** Caps on pulling large frames from other nodes (actors/runtime/pull-budget.ts); above them: busy, the asker retries. */
  readonly transfers: { readonly maxPullBytes: number; readonly maxPullBytesPerPeer: number; readonly maxConcurrentPulls: number };
  readonly events: { readonly maxAgeSec: number; readonly maxBytes: number; readonly duplicateWindowSec: number; readonly replicas: number };
  readonly suppression: {
    readonly enabled: boolean;
    readonly scope: "global" | "sender-domain";
    readonly autoAdd: ReadonlyArray<"bad-mailbox" | "bad-domain" | "complaint">;
    readonly loadTimeoutMs: number;
  };
  /** Bounces and complaints: VERP, the bounce domain, feedback-loop addresses, and where the token key is read from (at start). */
  readonly feedback: {
    readonly verp: VerpMode;
    /** Lower case; unset: no VERP addresses are taken. */
    readonly bounceDomain: string | undefined;
    /** Lower case. */
    readonly fblAddresses: ReadonlyArray<string>;
    /** Unset only when feedback is off (no bounce domain, no feedback-loop address). */
    readonly key: SecretSource | undefined;
  };
  readonly reputation: { readonly maxSenderDomains: number; readonly thresholds: ReadonlyArray<Threshold> };
}

/** Room for what a mailbox adds to a message (trace headers) and the frame's JSON head. */
const FRAME_HEADROOM = 1024 * 1024;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

type DeliveryFile = NonNullable<ConfigFile["delivery"]>;

/** A named warm-up curve with its hourly caps worked out. */
const curveOf = (name: string, schedule: typeof WarmupScheduleConfig.Type): WarmupSchedule => {
  const { daily, hourly, spreadHours } = schedule;
  const where = `delivery.warmupSchedules.${name}`;
  if (hourly !== undefined && spreadHours !== undefined) throw new ConfigError(`invalid config: ${where} gives both hourly and spreadHours; keep one`);
  if (hourly !== undefined && hourly.length !== daily.length) throw new ConfigError(`invalid config: ${where}.hourly has ${hourly.length} caps for ${daily.length} days of daily; give one per day`);
  const byHour = hourly ?? (spreadHours === undefined ? undefined : daily.map((cap) => Math.ceil(cap / spreadHours)));
  return { daily, ...(byHour ? { hourly: byHour } : {}) };
};

/** Pools with each cold address's warm-up resolved (its curve, its first day). */
const poolsOf = (delivery: DeliveryFile): PoolsConfig => {
  const schedules = delivery.warmupSchedules ?? {};
  const curves = Object.fromEntries(Object.entries(schedules).map(([name, schedule]) => [name, curveOf(name, schedule)]));
  const warmupOf = (pool: string, warmup: { schedule: string; since: string } | undefined): SourceWarmup | undefined => {
    if (warmup === undefined) return undefined;
    const curve = curves[warmup.schedule];
    if (curve === undefined) throw new ConfigError(`invalid config: pool ${pool} names warm-up schedule ${JSON.stringify(warmup.schedule)}, which is not one of delivery.warmupSchedules`);
    return { schedule: warmup.schedule, since: warmup.since, startDay: parseDay(warmup.since)!, curve };
  };
  const entries = Object.entries(delivery.pools ?? {}).map(([name, pool]) => {
    const addresses = "addresses" in pool ? pool.addresses : pool;
    const sources = addresses.map((s): SourceAddress => {
      const warmup = warmupOf(name, s.warmup);
      return { address: s.address, ehlo: s.ehlo, weight: s.weight ?? 1, ...(warmup ? { warmup } : {}) };
    });
    return { name, sources, overflow: "addresses" in pool ? pool.overflow : undefined };
  });
  return {
    pools: Object.fromEntries(entries.map(({ name, sources }) => [name, sources])),
    rules: delivery.poolRules ?? [],
    defaultPool: delivery.defaultPool,
    overflow: Object.fromEntries(entries.flatMap(({ name, overflow }) => (overflow ? [[name, overflow]] : []))),
  };
};

const DEFAULT_PAUSE_MS = 30 * 60_000;

/** Thresholds with their defaults: 1 h window, 100 messages, a 30-minute pause, level 2, recovery below 80 % of the limit. */
const thresholdsOf = (file: ConfigFile): ReadonlyArray<Threshold> => {
  const thresholds = (file.reputation?.thresholds ?? []).map((t, n): Threshold => {
    const where = `reputation.thresholds[${n}]`;
    if (t.action === "slow" && t.pauseMs !== undefined) throw new ConfigError(`invalid config: ${where} gives pauseMs to a slow; pauseMs is for action "pause"`);
    if (t.action === "pause" && t.level !== undefined) throw new ConfigError(`invalid config: ${where} gives level to a pause; level is for action "slow"`);
    const limits: Partial<Record<RateKind, number>> = {
      ...(t.bounceRate !== undefined ? { bounce: t.bounceRate } : {}),
      ...(t.complaintRate !== undefined ? { complaint: t.complaintRate } : {}),
      ...(t.deferralRate !== undefined ? { deferral: t.deferralRate } : {}),
    };
    const window = t.window ?? "1h";
    return {
      name: t.name ?? `${t.dimension}-${Object.keys(limits).join("-")}-${window}`,
      dimension: t.dimension,
      window,
      limits,
      minMessages: t.minMessages ?? 100,
      action: t.action === "slow" ? { _tag: "slow", level: t.level ?? 2 } : { _tag: "pause", ms: t.pauseMs ?? DEFAULT_PAUSE_MS },
      recoverRatio: t.recoverRatio ?? 0.8,
    };
  });
  const names = thresholds.map((t) => t.name);
  const repeated = names.find((name, n) => names.indexOf(name) !== n);
  if (repeated !== undefined) throw new ConfigError(`invalid config: two reputation.thresholds are named ${JSON.stringify(repeated)}; give each a distinct name`);
  return thresholds;
};

/** Development defaults: loopback only, one local domain, one user (documented in the README). */
const withDefaults = (file: ConfigFile, development: boolean): NodeConfig => ({
  nodeId: file.nodeId ?? "node1",
  cluster: file.cluster ?? "tern",
  hostname: file.hostname ?? "tern.localhost",
  dataDir: file.dataDir ?? "./data",
  configFile: undefined,
  nats: {
    servers: file.nats?.servers ?? ["nats://127.0.0.1:4222"],
    embedded: file.nats?.embedded ?? development,
    auth: natsAuthOf(file.nats ?? {}),
    tls: file.nats?.tls,
    trustedLink: file.nats?.trustedLink ?? false,
    replicas: file.nats?.replicas ?? 1,
  },
  listen: {
    host: file.listen?.host ?? "127.0.0.1",
    smtp: file.listen?.smtp ?? 2525,
    smtps: file.listen?.smtps ?? 4465,
    pop3: file.listen?.pop3 ?? 1110,
    imap: file.listen?.imap ?? 1143,
    imaps: file.listen?.imaps ?? 1993,
    http: file.listen?.http ?? 9025,
  },
  http: file.http?.listen !== undefined ? parseHostPort(file.http.listen) : { host: file.listen?.host ?? "127.0.0.1", port: file.listen?.http ?? 9025 },
  metrics: { queueDestinations: file.metrics?.queueDestinations ?? 10 },
  tls: { certFile: file.tls?.certFile, keyFile: file.tls?.keyFile },
  smtp: {
    bareLineEndings: file.smtp?.bareLineEndings ?? "reject",
    longLines: file.smtp?.longLines ?? "reject",
    accept8bitWithoutBodyParameter: file.smtp?.accept8bitWithoutBodyParameter ?? true, // as Postfix: real clients (nodemailer too) send 8-bit without BODY=8BITMIME
    authRequiresTls: file.smtp?.authRequiresTls ?? true,
    idleTimeoutMs: file.smtp?.idleTimeoutMs ?? 5 * 60_000, // RFC 5321 §4.5.3.2.7
    maxErrors: file.smtp?.maxErrors ?? 20,
    // Caps sized so that the listeners (SMTP, SMTPS, POP3, IMAP), outbound delivery and a reserve fit in
    // 4096 descriptors (nodes/fd-limit.ts warns at start when they do not fit).
    maxConnections: file.smtp?.maxConnections ?? 1_000,
    maxSmtpsConnections: file.smtp?.maxSmtpsConnections ?? 200,
    maxConnectionsPerIp: file.smtp?.maxConnectionsPerIp ?? 100,
    maxMessagesPerIpPerMinute: file.smtp?.maxMessagesPerIpPerMinute ?? 100_000,
    maxAuthFailuresPerIp: file.smtp?.maxAuthFailuresPerIp ?? 20,
    maxAuthFailuresPerUserAndIp: file.smtp?.maxAuthFailuresPerUserAndIp ?? 5,
    authFailureWindowMs: file.smtp?.authFailureWindowMs ?? 15 * 60_000,
    catchAll: Object.fromEntries(Object.entries(file.smtp?.catchAll ?? {}).map(([d, a]) => [d.toLowerCase(), a.toLowerCase()])),
  },
  localDomains: (file.localDomains ?? ["localhost"]).map((d) => d.toLowerCase()),
  users: usersOf(file),
  postmaster: file.postmaster?.toLowerCase() ?? defaultPostmaster(usersOf(file)),
  logins: {
    // Five failures are more than a user's typos; from there each attempt waits 1, 2, 4 … 30 s.
    accountDelayAfterFailures: file.logins?.accountDelayAfterFailures ?? 5,
    accountDelayMs: file.logins?.accountDelayMs ?? 1_000,
    accountMaxDelayMs: file.logins?.accountMaxDelayMs ?? 30_000,
    accountWindowMs: file.logins?.accountWindowMs ?? 15 * 60_000,
  },
  trustedNetworks: file.trustedNetworks ?? ["127.0.0.0/8", "::1/128"],
  dkim: {
    domains: Object.fromEntries(Object.entries(file.dkim?.domains ?? {}).map(([domain, keys]) => [domain.toLowerCase().replace(/\.$/, ""), keys])),
    headers: file.dkim?.headers,
  },
  inbound: {
    authenticate: file.inbound?.authenticate ?? true,
    authservId: file.inbound?.authservId ?? file.hostname ?? "tern.localhost",
    timeoutMs: file.inbound?.timeoutMs ?? 10_000,
    // Gmail refuses header sections over about 232 KB; Exim's default limit is 1 MiB.
    maxHeaderBytes: file.inbound?.maxHeaderBytes ?? 256 * 1024,
    dmarc: Object.fromEntries(Object.entries(file.inbound?.dmarc ?? {}).map(([domain, policy]) => [domain.toLowerCase().replace(/\.$/, ""), policy])),
  },
  dns: {
    servers: (file.dns?.servers ?? systemNameservers()).map(parseHostPort),
    timeoutMs: file.dns?.timeoutMs ?? 2_000,
    tries: file.dns?.tries ?? 2,
    cacheEntries: file.dns?.cacheEntries ?? 10_000,
    minTtlSec: file.dns?.minTtlSec ?? 5,
    maxTtlSec: file.dns?.maxTtlSec ?? 3600,
    maxNegativeTtlSec: file.dns?.maxNegativeTtlSec ?? 900,
    addressFamilies: file.dns?.addressFamilies ?? "ipv4-first",
    allowedTargetNetworks: file.dns?.allowedTargetNetworks ?? [],
    ptrTimeoutMs: file.dns?.ptrTimeoutMs ?? 1_000,
  },
  delivery: {
    remotePort: file.delivery?.remotePort ?? 25,
    connectionsPerSite: file.delivery?.connectionsPerSite ?? 4,
    maxInFlight: file.delivery?.maxInFlight ?? 512,
    pollMs: file.delivery?.pollMs ?? 250,
    retryBaseMs: file.delivery?.retryBaseMs ?? 60_000,
    retryMaxMs: file.delivery?.retryMaxMs ?? 3_600_000,
    connectTimeoutMs: file.delivery?.connectTimeoutMs ?? 30_000,
    greetingTimeoutMs: file.delivery?.greetingTimeoutMs ?? 300_000,
    socketTimeoutMs: file.delivery?.socketTimeoutMs ?? 600_000,
    messagesPerConnection: file.delivery?.messagesPerConnection ?? 100,
    maxRecipientsPerTransaction: file.delivery?.maxRecipientsPerTransaction ?? 100,
    connectionIdleMs: file.delivery?.connectionIdleMs ?? 5_000,
    maxConnections: file.delivery?.maxConnections ?? 200,
    siteConnections: file.delivery?.siteConnections ?? {},
    siteBudgets: file.delivery?.siteBudgets ?? {},
    siteBudgetLeaseMs: file.delivery?.siteBudgetLeaseMs ?? 5_000,
    providers: { ...starterProviders, ...file.delivery?.providers },
    pools: poolsOf(file.delivery ?? {}),
    requireTls: file.delivery?.requireTls ?? [],
    maxInFlightPerQueue: file.delivery?.maxInFlightPerQueue ?? 128,
    maxAgeMs: file.delivery?.maxAgeMs ?? 5 * 24 * 3_600_000,
    delayNoticeMs: file.delivery?.delayNoticeMs ?? 4 * 3_600_000,
    // As long as a first retry waits: a hold must not outlast the retry schedule.
    holdMs: file.delivery?.holdMs ?? file.delivery?.retryBaseMs ?? 60_000,
    maxQueueWaitMs: file.delivery?.maxQueueWaitMs ?? 15 * 60_000,
    bounceRulesFile: file.delivery?.bounceRulesFile,
    throttleRulesFile: file.delivery?.throttleRulesFile,
    throttleRecoveryMs: file.delivery?.throttleRecoveryMs ?? 10 * 60_000,
    throttleGapMs: file.delivery?.throttleGapMs ?? 1_000,
    dsnMaxReturnBytes: file.delivery?.dsnMaxReturnBytes ?? 1024 * 1024,
  },
  limits: { maxMessageBytes: file.limits?.maxMessageBytes ?? 25 * 1024 * 1024, maxRecipients: file.limits?.maxRecipients ?? 100 },
  pop3: {
    // Loopback cannot be listened in on; everywhere else the password needs TLS first.
    plaintextLoginNetworks: file.pop3?.plaintextLoginNetworks ?? ["127.0.0.0/8", "::1/128"],
    maxConnections: file.pop3?.maxConnections ?? 500,
    lockLeaseMs: file.pop3?.lockLeaseMs ?? 30_000,
    maxFailedLoginsPerIp: file.pop3?.maxFailedLoginsPerIp ?? 20,
    maxFailedLoginsPerUserAndIp: file.pop3?.maxFailedLoginsPerUserAndIp ?? 5,
    failedLoginWindowMs: file.pop3?.failedLoginWindowMs ?? 15 * 60_000,
    failedLoginDelayMs: file.pop3?.failedLoginDelayMs ?? 1_000,
  },
  imap: {
    // The same rule as POP3's: where POP3 takes a password in the clear, IMAP does.
    plaintextLoginNetworks: file.imap?.plaintextLoginNetworks ?? file.pop3?.plaintextLoginNetworks ?? ["127.0.0.0/8", "::1/128"],
    maxConnections: file.imap?.maxConnections ?? 500,
    maxFailedLoginsPerIp: file.imap?.maxFailedLoginsPerIp ?? 20,
    maxFailedLoginsPerUserAndIp: file.imap?.maxFailedLoginsPerUserAndIp ?? 5,
    failedLoginWindowMs: file.imap?.failedLoginWindowMs ?? 15 * 60_000,
    failedLoginDelayMs: file.imap?.failedLoginDelayMs ?? 1_000,
    idleTimeoutMs: file.imap?.idleTimeoutMs ?? 30 * 60_000,
  },
  mailbox: {
    quotaBytes: file.mailbox?.quotaBytes,
    quotas: Object.fromEntries((file.users ?? []).flatMap((u) => (u.quotaBytes === undefined ? [] : [[u.address.toLowerCase(), u.quotaBytes]]))),
    idleMs: file.mailbox?.idleMs ?? 60_000,
    askTimeoutMs: file.mailbox?.askTimeoutMs ?? 30_000,
    moveStepTimeoutMs: file.mailbox?.moveStepTimeoutMs ?? 30_000,
  },
  membership: { heartbeatMs: file.membership?.heartbeatMs ?? 2_000, ttlMs: file.membership?.ttlMs ?? 6_000 },
  status: { keepFinishedMs: file.status?.keepFinishedMs ?? 7 * 24 * 3_600_000 },
  api: {
    tenants: (file.api?.tenants ?? []).map((t) => ({ name: t.name, senderDomains: t.senderDomains.map((d) => d.toLowerCase()) })),
    maxSubmitsPerTenantPerMinute: file.api?.maxSubmitsPerTenantPerMinute ?? 100_000,
    maxConcurrentSubmits: file.api?.maxConcurrentSubmits ?? 1_000,
    maxUploads: file.api?.maxUploads ?? 32,
    uploadIdleTimeoutMs: file.api?.uploadIdleTimeoutMs ?? 60_000,
    maxSendAtAheadMs: file.api?.maxSendAtAheadMs ?? 30 * 24 * 3_600_000,
    idempotencyTtlMs: file.api?.idempotencyTtlMs ?? 24 * 3_600_000,
  },
  transfers: {
    maxPullBytes: file.transfers?.maxPullBytes ?? 128 * 1024 * 1024,
    maxPullBytesPerPeer: file.transfers?.maxPullBytesPerPeer ?? 64 * 1024 * 1024,
    maxConcurrentPulls: file.transfers?.maxConcurrentPulls ?? 8,
  },
  events: {
    maxAgeSec: file.events?.maxAgeSec ?? 7 * 24 * 3600,
    maxBytes: file.events?.maxBytes ?? 1024 * 1024 * 1024,
    duplicateWindowSec: file.events?.duplicateWindowSec ?? 120,
    replicas: file.events?.replicas ?? file.nats?.replicas ?? 1,
  },
  suppression: {
    enabled: file.suppression?.enabled ?? true,
    scope: file.suppression?.scope ?? "sender-domain",
    autoAdd: [...new Set(file.suppression?.autoAdd ?? (["bad-mailbox", "bad-domain", "complaint"] as const))],
    loadTimeoutMs: file.suppression?.loadTimeoutMs ?? 5_000,
  },
  feedback: {
    verp: file.feedback?.verp ?? "off",
    bounceDomain: file.feedback?.bounceDomain?.toLowerCase().replace(/\.$/, ""),
    fblAddresses: (file.feedback?.fblAddresses ?? []).map((a) => a.toLowerCase()),
    key: file.feedback?.keyFile !== undefined ? { file: file.feedback.keyFile } : file.feedback?.keyEnv !== undefined ? { env: file.feedback.keyEnv } : undefined,
  },
  reputation: { maxSenderDomains: file.reputation?.maxSenderDomains ?? 100, thresholds: thresholdsOf(file) },
});

const usersOf = (file: ConfigFile): ReadonlyArray<UserRecord> =>
  (file.users ?? [{ address: "me@localhost", password: "tern" }]).map((u) => ({ ...u, address: u.address.toLowerCase() }));

/** A user named postmaster if there is one, else the first user: the one an operator lists first is usually the admin. */
const defaultPostmaster = (users: ReadonlyArray<UserRecord>): string | undefined =>
  users.find((u) => localPartOf(u.address) === "postmaster")?.address ?? users[0]?.address;

type NatsFile = NonNullable<ConfigFile["nats"]>;

/** The one way of authenticating the nats section names; several at once is a config error. */
const natsAuthOf = (nats: NatsFile): NatsAuth => {
  const named = [
    nats.passwordFile !== undefined || nats.passwordEnv !== undefined ? "password" : undefined,
    nats.tokenFile !== undefined || nats.tokenEnv !== undefined ? "token" : undefined,
    nats.nkeySeedFile !== undefined || nats.nkeySeedEnv !== undefined ? "nkey seed" : undefined,
    nats.credsFile !== undefined ? "creds file" : undefined,
  ].filter((kind) => kind !== undefined);
  if (named.length > 1) throw new ConfigError(`invalid config: nats names more than one way to authenticate (${named.join(", ")}); keep one`);
  const source = (file: string | undefined, env: string | undefined): SecretSource => (file !== undefined ? { file } : { env: env! });
  if (nats.passwordFile !== undefined || nats.passwordEnv !== undefined) {
    if (nats.user === undefined) throw new ConfigError("invalid config: nats.user is required with a NATS password");
    return { kind: "user", user: nats.user, password: source(nats.passwordFile, nats.passwordEnv) };
  }
  if (nats.user !== undefined) throw new ConfigError("invalid config: nats.user needs nats.passwordFile (or TERN_NATS_PASSWORD)");
  if (nats.tokenFile !== undefined || nats.tokenEnv !== undefined) return { kind: "token", token: source(nats.tokenFile, nats.tokenEnv) };
  if (nats.nkeySeedFile !== undefined || nats.nkeySeedEnv !== undefined) return { kind: "nkey", seed: source(nats.nkeySeedFile, nats.nkeySeedEnv) };
  if (nats.credsFile !== undefined) return { kind: "creds", file: nats.credsFile };
  return { kind: "none" };
};

/** The machine's resolvers from /etc/resolv.conf (IPv4 only for now), else 127.0.0.1:53. */
const systemNameservers = (): string[] => {
  let text = "";
  try {
    text = readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    // no resolv.conf: fall through to the loopback default
  }
  const servers = [...text.matchAll(/^nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*$/gm)].map((m) => `${m[1]}:53`);
  return servers.length > 0 ? servers : ["127.0.0.1:53"];
};

const parseHostPort = (value: string) => {
  const at = value.lastIndexOf(":");
  const host = value.slice(0, at);
  return { host: host.startsWith("[") ? host.slice(1, -1) : host, port: Number(value.slice(at + 1)) };
};

/** The environment variable behind each overridable path, for naming it when its value is bad. */
const OVERRIDE_VARIABLES: Readonly<Record<string, string>> = {
  nodeId: "TERN_NODE_ID",
  dataDir: "TERN_DATA_DIR",
  "nats.servers": "TERN_NATS_URL",
  "listen.smtp": "TERN_SMTP_PORT",
  "listen.smtps": "TERN_SMTPS_PORT",
  "listen.pop3": "TERN_POP3_PORT",
  "listen.imap": "TERN_IMAP_PORT",
  "listen.imaps": "TERN_IMAPS_PORT",
  "listen.http": "TERN_HTTP_PORT",
};

/** Path → `VARIABLE="value"` for every override the environment sets. */
const overrideSources = (env: NodeJS.ProcessEnv): Record<string, string> =>
  Object.fromEntries(Object.entries(OVERRIDE_VARIABLES).filter(([, name]) => env[name] !== undefined).map(([path, name]) => [path, `${name}=${JSON.stringify(env[name])}`]));

/** Overrides from the environment, for containers and tests. */
const environmentOverrides = (env: NodeJS.ProcessEnv): ConfigFile => {
  const port = (name: string) => (env[name] !== undefined ? Number(env[name]) : undefined);
  return {
    ...(env.TERN_NODE_ID ? { nodeId: env.TERN_NODE_ID } : {}),
    ...(env.TERN_DATA_DIR ? { dataDir: env.TERN_DATA_DIR } : {}),
    nats: {
      ...(env.TERN_NATS_URL ? { servers: env.TERN_NATS_URL.split(",") } : {}),
      ...(env.TERN_NATS_USER ? { user: env.TERN_NATS_USER } : {}),
      // Secrets in the environment stay there: the config records only which variable holds them.
      ...(env.TERN_NATS_PASSWORD ? { passwordEnv: "TERN_NATS_PASSWORD" } : {}),
      ...(env.TERN_NATS_TOKEN ? { tokenEnv: "TERN_NATS_TOKEN" } : {}),
      ...(env.TERN_NATS_NKEY_SEED ? { nkeySeedEnv: "TERN_NATS_NKEY_SEED" } : {}),
      ...(env.TERN_NATS_CREDS ? { credsFile: env.TERN_NATS_CREDS } : {}),
    },
    listen: { smtp: port("TERN_SMTP_PORT"), smtps: port("TERN_SMTPS_PORT"), pop3: port("TERN_POP3_PORT"), imap: port("TERN_IMAP_PORT"), imaps: port("TERN_IMAPS_PORT"), http: port("TERN_HTTP_PORT") },
    // The feedback key stays in the environment too.
    ...(env.TERN_FEEDBACK_KEY ? { feedback: { keyEnv: "TERN_FEEDBACK_KEY" } } : {}),
  };
};

const credentialKeys = ["user", "passwordFile", "passwordEnv", "tokenFile", "tokenEnv", "nkeySeedFile", "nkeySeedEnv", "credsFile"] as const;
const hasCredentials = (nats: NatsFile | undefined) => credentialKeys.some((key) => nats?.[key] !== undefined);
const withoutCredentials = (nats: NatsFile | undefined): NatsFile =>
  Object.fromEntries(Object.entries(nats ?? {}).filter(([key]) => !(credentialKeys as ReadonlyArray<string>).includes(key)));

const withoutKeyFile = (feedback: ConfigFile["feedback"]): ConfigFile["feedback"] =>
  Object.fromEntries(Object.entries(feedback ?? {}).filter(([key]) => key !== "keyFile"));

const merge = (file: ConfigFile, overrides: ConfigFile): ConfigFile => ({
  ...file,
  ...Object.fromEntries(Object.entries(overrides).filter(([key]) => key !== "listen" && key !== "nats" && key !== "feedback")),
  // A key from the environment replaces the file's key file; the rest of the section stays.
  ...(overrides.feedback !== undefined || file.feedback !== undefined
    ? { feedback: { ...(overrides.feedback?.keyEnv !== undefined ? withoutKeyFile(file.feedback) : file.feedback), ...overrides.feedback } }
    : {}),
  // Credentials from the environment replace the file's, rather than adding a second way to log in.
  nats: { ...(hasCredentials(overrides.nats) ? withoutCredentials(file.nats) : file.nats), ...overrides.nats },
  listen: { ...file.listen, ...Object.fromEntries(Object.entries(overrides.listen ?? {}).filter(([, v]) => v !== undefined)) },
  // TERN_HTTP_PORT moves the HTTP endpoint also when the file gives it an address of its own.
  ...(file.http?.listen !== undefined && overrides.listen?.http !== undefined
    ? { http: { ...file.http, listen: `${file.http.listen.slice(0, file.http.listen.lastIndexOf(":"))}:${overrides.listen.http}` } }
    : {}),
});

/**
 * Validates raw JSON; errors name each bad field and the value found there. `development`:
 * the node runs on defaults without a config file (`tern node` alone), where an embedded
 * NATS server is started when none answers; a config file must ask for that
 * (`nats.embedded`), since a production node that quietly started its own NATS would form
 * a cluster of one.
 */
export const parseConfig = (raw: unknown, env: NodeJS.ProcessEnv = {}, { development = false }: { readonly development?: boolean } = {}): NodeConfig => {
  const decode = Schema.decodeUnknownExit(ConfigFile, { onExcessProperty: "error", errors: "all" });
  const file = decode(raw);
  if (Exit.isFailure(file)) throw new ConfigError(`invalid config:\n${describeIssues(schemaMessage(file.cause), raw)}`);
  const overrides = environmentOverrides(env);
  const mergedRaw = merge(file.value, overrides);
  const merged = decode(mergedRaw);
  if (Exit.isFailure(merged)) throw new ConfigError(`invalid environment override:\n${describeIssues(schemaMessage(merged.cause), mergedRaw, overrideSources(env))}`);
  const config = withDefaults(merged.value, development);
  const withCredentials = config.nats.servers.find((server) => /^[a-z]+:\/\/[^/]*@/i.test(server));
  if (withCredentials !== undefined) {
    // Not echoed: the URL holds a secret.
    throw new ConfigError("invalid config: a NATS server URL carries credentials (user:password@); use nats.user and nats.passwordFile, or TERN_NATS_USER and TERN_NATS_PASSWORD");
  }
  const clear = plaintextServers(config.nats.servers, config.nats.tls);
  if (clear.length > 0 && !config.nats.trustedLink) {
    throw new ConfigError(
      `invalid config: NATS server ${clear[0]} is neither loopback nor TLS, and mail crosses NATS between nodes; ` +
        `configure nats.tls, or set nats.trustedLink to true if that network is private`,
    );
  }
  const transferable = Math.min(config.transfers.maxPullBytes, config.transfers.maxPullBytesPerPeer, MAX_BLOB_BYTES) - FRAME_HEADROOM;
  if (config.limits.maxMessageBytes > transferable) {
    throw new ConfigError(
      `invalid config: limits.maxMessageBytes (${config.limits.maxMessageBytes}) is more than one node may pull from another ` +
        `(${transferable}: the lower of transfers.maxPullBytes, transfers.maxPullBytesPerPeer and ${MAX_BLOB_BYTES}, less ${FRAME_HEADROOM} for headers); ` +
        `such messages could never reach a mailbox on another node`,
    );
  }
  if (config.membership.ttlMs < 2 * config.membership.heartbeatMs) {
    throw new ConfigError(
      `invalid config: membership.ttlMs (${config.membership.ttlMs}) must be at least twice membership.heartbeatMs (${config.membership.heartbeatMs}), ` +
        `or one late heartbeat makes a live node look gone`,
    );
  }
  const unknownProvider = Object.keys(config.delivery.siteBudgets).find((key) => patternsOf(key, config.delivery.providers) === undefined);
  if (unknownProvider !== undefined) {
    throw new ConfigError(`invalid config: delivery.siteBudgets names ${JSON.stringify(unknownProvider)}, which is not a provider of the table (${Object.keys(config.delivery.providers).join(", ")}; add it under delivery.providers)`);
  }
  if (OTHER_PROVIDER in config.delivery.providers) {
    throw new ConfigError(`invalid config: delivery.providers names "${OTHER_PROVIDER}", which warm-up caps use for destinations of no provider; choose another name`);
  }
  const { pools } = config.delivery;
  // An address's usage is counted once, whatever pool sends from it: its warm-up must be the same in each.
  const warmups = new Map<string, string>();
  for (const source of Object.values(pools.pools).flat()) {
    const warmup = JSON.stringify(source.warmup ? [source.warmup.schedule, source.warmup.since] : null);
    if ((warmups.get(source.address) ?? warmup) !== warmup) throw new ConfigError(`invalid config: source address ${source.address} is in several pools with different warm-ups; give it the same warmup (or none) in each`);
    warmups.set(source.address, warmup);
  }
  const unknownPool = [...pools.rules.map((rule) => rule.pool), ...(pools.defaultPool !== undefined ? [pools.defaultPool] : [])].find((name) => !(name in pools.pools));
  if (unknownPool !== undefined) throw new ConfigError(`invalid config: pool ${JSON.stringify(unknownPool)} (in delivery.poolRules or delivery.defaultPool) is not one of delivery.pools`);
  const tenantNames = config.api.tenants.map((t) => t.name);
  // "cluster" is the tenant token of cluster events (node-up, node-down) on the events stream;
  // "handoff" the scope of a drain's hand-off records beside the tenants' idempotency keys
  // (a tenant of that name could make a hand-off look done and its mail be dropped).
  const reservedTenants = ["default", "cluster", "handoff"];
  const repeatedTenant = tenantNames.find((name, n) => tenantNames.indexOf(name) !== n || reservedTenants.includes(name));
  if (repeatedTenant !== undefined) throw new ConfigError(`invalid config: api.tenants names ${JSON.stringify(repeatedTenant)} twice, or uses a reserved name ("default", "cluster", "handoff")`);
  const tenantDomains = config.api.tenants.flatMap((t) => t.senderDomains);
  const sharedDomain = tenantDomains.find((domain, n) => tenantDomains.indexOf(domain) !== n);
  if (sharedDomain !== undefined) throw new ConfigError(`invalid config: sender domain ${JSON.stringify(sharedDomain)} belongs to more than one of api.tenants`);
  const homeless = config.users.filter((u) => !config.localDomains.includes(domainOf(u.address)));
  if (homeless.length > 0) {
    const address = homeless[0]!.address;
    throw new ConfigError(`invalid config: users[].address ${JSON.stringify(address)} is not in localDomains (add ${JSON.stringify(domainOf(address))} to localDomains)`);
  }
  const postmaster = config.postmaster;
  if (postmaster !== undefined && config.localDomains.includes(domainOf(postmaster)) && !config.users.some((u) => u.address === postmaster)) {
    throw new ConfigError(`invalid config: postmaster ${JSON.stringify(postmaster)} is in localDomains but is not one of users[].address`);
  }
  checkDkim(config.dkim);
  const problems = configProblems(config);
  if (problems.length > 0) throw new ConfigError(`invalid config:\n${problems.map((problem) => `  ${problem}`).join("\n")}`);
  checkInbound(config);
  checkFeedback(config, file.value.feedback);
  return config;
};

/** What the schema cannot say about `inbound`: policies name local domains, the authserv-id is a token (RFC 8601 §2.5). */
const checkInbound = (config: NodeConfig) => {
  const stray = Object.keys(config.inbound.dmarc).find((domain) => domain !== "*" && !config.localDomains.includes(domain));
  if (stray !== undefined) throw new ConfigError(`invalid config: inbound.dmarc names ${JSON.stringify(stray)}, which is not one of localDomains (or "*")`);
  if (config.inbound.authenticate && !/^[A-Za-z0-9.-]+$/.test(config.inbound.authservId)) {
    throw new ConfigError(`invalid config: hostname ${JSON.stringify(config.inbound.authservId)} cannot be an authserv-id (RFC 8601); set inbound.authservId to a host name`);
  }
};

/** What the schema cannot say about `feedback`: a VERP needs a bounce domain, every report address a key, and none is a mailbox. */
const checkFeedback = (config: NodeConfig, file: ConfigFile["feedback"]) => {
  const { verp, bounceDomain, fblAddresses, key } = config.feedback;
  if (file?.keyFile !== undefined && file.keyEnv !== undefined) throw new ConfigError("invalid config: feedback names both keyFile and keyEnv; keep one");
  if (bounceDomain !== undefined) {
    const problem = domainSyntaxProblem(bounceDomain);
    if (problem !== undefined) throw new ConfigError(`invalid config: feedback.bounceDomain ${JSON.stringify(bounceDomain)} is not a domain name (${problem})`);
    if (config.localDomains.includes(bounceDomain)) {
      throw new ConfigError(`invalid config: feedback.bounceDomain ${JSON.stringify(bounceDomain)} is one of localDomains; give VERP a domain of its own (no mailboxes), e.g. bounces.${bounceDomain}`);
    }
  }
  if (verp !== "off" && bounceDomain === undefined) throw new ConfigError(`invalid config: feedback.verp "${verp}" needs feedback.bounceDomain (the domain of the return paths)`);
  if ((bounceDomain !== undefined || fblAddresses.length > 0) && key === undefined) {
    throw new ConfigError("invalid config: feedback needs a key to sign and check its tokens: feedback.keyFile (one key per line, at least 16 characters) or TERN_FEEDBACK_KEY");
  }
  const mailbox = fblAddresses.find((address) => config.users.some((u) => u.address === address));
  if (mailbox !== undefined) throw new ConfigError(`invalid config: feedback.fblAddresses names ${JSON.stringify(mailbox)}, which is a user's mailbox; reports there are read by Tern, not stored`);
};

/** What the schema cannot say about `dkim`: each domain has keys, no selector twice, From is signed. */
const checkDkim = (dkim: DkimConfig) => {
  for (const [domain, keys] of Object.entries(dkim.domains)) {
    if (domainSyntaxProblem(domain) !== undefined) throw new ConfigError(`invalid config: dkim.domains key ${JSON.stringify(domain)} is not a domain name (${domainSyntaxProblem(domain)})`);
    if (keys.length === 0) throw new ConfigError(`invalid config: dkim.domains[${JSON.stringify(domain)}] lists no key; give at least one, or leave the domain out`);
    const selectors = keys.map((k) => k.selector.toLowerCase());
    const repeated = selectors.find((s, n) => selectors.indexOf(s) !== n);
    if (repeated !== undefined) throw new ConfigError(`invalid config: dkim.domains[${JSON.stringify(domain)}] names selector ${JSON.stringify(repeated)} twice`);
  }
  // RFC 6376 §5.4: the From field MUST be signed; a list without it makes signatures every verifier fails.
  if (dkim.headers !== undefined && !dkim.headers.some((h) => h.trim().toLowerCase() === "from")) {
    throw new ConfigError("invalid config: dkim.headers must include From (RFC 6376 §5.4: the From field is always signed)");
  }
};

export const loadConfig = async (path: string | undefined, env: NodeJS.ProcessEnv): Promise<NodeConfig> => {
  if (path === undefined) return parseConfig({}, env, { development: true });
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(error as Error).message}`);
  }
  return { ...parseConfig(raw, env), configFile: path };
};

const schemaMessage = (cause: Cause.Cause<Schema.SchemaError>): string => {
  const error = Cause.findErrorOption(cause);
  return error._tag === "Some" ? error.value.message : Cause.pretty(cause);
};

/** Rewrites Schema's `at ["a"][0]["b"]` lines as `a[0].b = <value>: <problem>` (naming the environment variable a value came from: `sources`). */
const describeIssues = (message: string, raw: unknown, sources: Readonly<Record<string, string>> = {}): string => {
  const lines = message.split("\n").map((l) => l.trim()).filter(Boolean);
  const described: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const problem = lines[i]!;
    const where = lines[i + 1]?.startsWith("at ") ? lines[++i]!.slice(3) : "";
    const path = [...where.matchAll(/\["([^"]*)"\]|\[(\d+)\]/g)].map((m) => m[1] ?? Number(m[2]));
    const value = path.reduce<unknown>((at, key) => (at as Record<string | number, unknown> | undefined)?.[key], raw);
    const name = path.map((k, n) => (typeof k === "number" ? `[${k}]` : n === 0 ? k : `.${k}`)).join("");
    const source = sources[name] ?? sources[name.replace(/\[\d+\]$/, "")];
    const from = source !== undefined ? ` (from ${source})` : "";
    described.push(`  ${name || "(root)"} = ${JSON.stringify(value)}${from}: ${problem}`);
  }
  return described.join("\n");
};
