// Submitting a message over the NATS API: the same path as SMTP submission. The request
// is checked as MAIL FROM and RCPT TO would be (actors/api/policy.ts), the body streams
// through the session's ingest (line endings, NUL, size) into the spool with the same
// trace and submission headers, and the reply is built only after `spool.accept`
// committed message, entries and idempotency record to disk: the API's 250.
//
// An idempotency key holds across the cluster: before the commit the key is claimed in
// the cluster's KV (actors/api/idempotency.ts); a key another node took is answered with
// that node's recorded reply, and nothing is queued here.
//
// A body comes whole (raw bytes, or a structured message composed here with nodemailer's
// MailComposer) or in chunks (actors/api/uploads.ts); both feed a `Submission`, whose
// partial body is discarded on every path that does not commit it. Every submitted message
// whose sender domain has a DKIM key is signed on its way in (actors/dkim/signer.ts).
import { PassThrough } from "node:stream";
import { Clock, Deferred, Effect, Exit } from "effect";
import MailComposer from "nodemailer/lib/mail-composer";
import { ApiError, type Envelope, type RefusedRecipient, type StructuredMessage, type SubmitReply } from "../../protocol/api.ts";
import { SlidingCounter } from "../common/sliding-counter.ts";
import { domainOf } from "../common/domains.ts";
import { newMessageId, routesFor, type QueueEntry } from "../queue/entry.ts";
import { acceptedEvents, type EventSource } from "../queue/events.ts";
import type { BodyWriter, Spool } from "../queue/spool.ts";
import { finishSigning, type DkimSigner, type DkimSigning } from "../dkim/signer.ts";
import { apiReceivedHeader, missingSubmissionHeaders, submissionMessageId } from "../session/headers.ts";
import { ingest, type IngestResult } from "../session/ingest.ts";
import type { RecipientPolicy } from "../session/policy.ts";
import type { Idempotency } from "./idempotency.ts";
import { checkSender, checkTenant, decideRecipients, dueTimeOf, type SenderPolicy } from "./policy.ts";
import { choosePool, headerValue, type PoolsConfig } from "../delivery/pools.ts";
import { MAX_LINE_OCTETS, type LongLines } from "../delivery/long-lines.ts";
import type { SuppressionCheck } from "../suppression/check.ts";
import { suppressedReply, type SuppressionMatch } from "../../protocol/suppression.ts";
import type { OutboundMarks } from "../feedback/marks.ts";
import type { Log } from "../../protocol/log.ts";

export interface SubmitConfig extends SenderPolicy {
  readonly nodeId: string;
  readonly hostname: string;
  readonly recipients: RecipientPolicy;
  readonly maxMessageBytes: number;
  readonly maxRecipients: number;
  readonly maxSubmitsPerTenantPerMinute: number;
  /** Submits (whole bodies, and upload commits) being committed at once; beyond: Busy. */
  readonly maxConcurrentSubmits: number;
  readonly maxSendAtAheadMs: number;
  /** How long an idempotency key is remembered after its submit. */
  readonly idempotencyTtlMs: number;
  /** "reject": a line over 998 octets refuses the message (BadMessage); "encode": folded before it is relayed. */
  readonly longLines: LongLines;
  /** IP pools: the request's `pool` must name one; else the pool rules choose. */
  readonly pools: PoolsConfig;
}

/** What a submitted message carries besides its body, kept in its attributes and every event. */
export interface Labels {
  readonly tenant: string;
  readonly tags: ReadonlyArray<string>;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface SubmitHooks {
  /** After the commit: metrics, the accepted event, and the scheduler for entries due now. */
  readonly accepted: (messageId: string, entries: ReadonlyArray<QueueEntry>, bytes: number, labels: Labels) => void;
  readonly rejected: (code: string) => void;
  readonly log: Log;
}

export interface SubmitDeps {
  readonly config: SubmitConfig;
  readonly spool: Spool;
  /** What the "accepted" events committed with each message say about this node and tenants. */
  readonly events: EventSource;
  readonly isLocalUser: (address: string) => boolean;
  /** False while the spool cannot commit. */
  readonly spoolHealthy: () => boolean;
  readonly spoolFailed: () => void;
  /** True while the node drains (`tern node drain`): submits are refused Unavailable, to be retried on another node. */
  readonly draining?: (() => boolean) | undefined;
  /** Claims idempotency keys cluster-wide before a keyed commit. */
  readonly idempotency: Idempotency;
  /** Signs submitted mail (undefined: no DKIM keys configured). */
  readonly dkim?: DkimSigner | undefined;
  /** The suppression list: a listed recipient is refused like an unknown one (none: no check). */
  readonly suppression?: SuppressionCheck | undefined;
  /** Feedback's marks on outbound mail (X-Tern-Id, per-recipient entries); none: nothing. */
  readonly marks?: OutboundMarks | undefined;
  readonly hooks: SubmitHooks;
}

/** A submit request after its checks: everything but the body. */
export interface Prepared {
  readonly tenant: string;
  readonly sender: string;
  readonly accepted: ReadonlyArray<{ readonly recipient: string; readonly deliverTo: string }>;
  readonly refused: SubmitReply["refused"];
  readonly dueAt: number;
  readonly labels: Labels;
  readonly idempotencyKey: string | undefined;
  /** The pool the request named. */
  readonly pool: string | undefined;
}

/** A body on its way into the spool: bytes go into `input`; `result` settles when it ended. */
export interface Submission {
  readonly id: string;
  readonly receivedAt: number;
  readonly body: BodyWriter;
  /** The signer the body streams through, when the node has DKIM keys. */
  readonly signing: DkimSigning | undefined;
  readonly input: PassThrough;
  readonly result: Promise<IngestResult>;
  /** The message's own header section, once ingest has read it (for the pool rules). */
  readonly headerSection: () => string;
}

export interface SubmitOptionsInput {
  readonly idempotencyKey?: string | undefined;
  readonly sendAt?: number | string | undefined;
  readonly pool?: string | undefined;
  readonly tags?: ReadonlyArray<string> | undefined;
  readonly metadata?: Readonly<Record<string, string>> | undefined;
}

export interface Submitter {
  /** Checks tenant, sender, recipients, limits and rate; fails with the ApiError that refuses it. */
  readonly prepare: (tenant: string, envelope: Envelope, options: SubmitOptionsInput) => Effect.Effect<Prepared, ApiError>;
  /** The first reply of an idempotency key still remembered on this node, marked as a duplicate. */
  readonly recall: (tenant: string, key: string | undefined) => Effect.Effect<SubmitReply | undefined>;
  /**
   * What another node asking about a key this node claimed is told: the reply recorded
   * here, once a commit of the key under way ended; undefined when nothing was queued here.
   */
  readonly recorded: (tenant: string, key: string) => Effect.Effect<SubmitReply | undefined>;
  /** Opens the body and starts ingesting whatever is written to `input`. */
  readonly start: (prepared: Prepared) => Effect.Effect<Submission>;
  /** Waits for the body's end and commits; one submit per idempotency key at a time on this node. */
  readonly commit: (prepared: Prepared, submission: Submission) => Effect.Effect<SubmitReply, ApiError>;
  /** Drops a submission's body (after a commit, does nothing). */
  readonly discard: (submission: Submission) => void;
}

const MINUTE = 60_000;

type Accepted = Prepared["accepted"][number];

/**
 * Splits the accepted recipients into those the suppression list lets through and those it
 * refuses (with the refusal the reply lists). Local domains' recipients are not checked:
 * the list is about mail leaving the cluster.
 */
const checkSuppressions = (check: SuppressionCheck | undefined, sender: string, accepted: ReadonlyArray<Accepted>, localDomains: ReadonlyArray<string>) => {
  if (check === undefined) return { accepted, suppressed: [] };
  const through: Accepted[] = [];
  const suppressed: Array<{ readonly refused: RefusedRecipient; readonly match: SuppressionMatch }> = [];
  for (const recipient of accepted) {
    const match = localDomains.includes(domainOf(recipient.recipient)) ? undefined : check.lookup(sender, recipient.recipient);
    if (match === undefined) through.push(recipient);
    else {
      const reply = suppressedReply(match);
      suppressed.push({ match, refused: { recipient: recipient.recipient, reason: "suppressed", reply: `${reply.code} ${reply.text}`, suppression: { scope: match.scope, reason: match.reason } } });
    }
  }
  return { accepted: through, suppressed };
};

export const makeSubmitter = (deps: SubmitDeps): Effect.Effect<Submitter> =>
  Effect.gen(function* () {
    const { config, spool, hooks } = deps;
    const rates = new SlidingCounter(MINUTE, 10_000);
    /** Keys being committed now, per tenant: a second submit with one waits for the first's reply. */
    const pending = new Map<string, Deferred.Deferred<SubmitReply, ApiError>>();
    const slotOf = (tenant: string, key: string) => `${tenant}\u0000${key}`;
    let committing = 0;

    const refuse = (error: ApiError) => {
      hooks.rejected(error.code);
      return Effect.fail(error);
    };

    const prepare: Submitter["prepare"] = (tenant, envelope, options) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis;
        const problem = checkTenant(tenant, config.tenants) ?? checkSender(envelope.from, tenant, config);
        if (problem) return yield* refuse(problem);
        if (new Set(envelope.to.map((r) => r.toLowerCase())).size > config.maxRecipients) {
          return yield* refuse(new ApiError({ code: "LimitExceeded", message: `more than ${config.maxRecipients} recipients (limits.maxRecipients)` }));
        }
        if (options.pool !== undefined && !Object.hasOwn(config.pools.pools, options.pool)) {
          return yield* refuse(new ApiError({ code: "BadRequest", message: `no IP pool ${JSON.stringify(options.pool)} on this node (delivery.pools)` }));
        }
        const dueAt = dueTimeOf(options.sendAt, now, config.maxSendAtAheadMs);
        if (typeof dueAt !== "number") return yield* refuse(dueAt);
        const decided = decideRecipients(envelope.to, tenant, config.recipients);
        const labels: Labels = { tenant, tags: options.tags ?? [], metadata: options.metadata ?? {} };
        const { accepted, suppressed } = checkSuppressions(deps.suppression, envelope.from, decided.accepted, config.localDomains);
        const refused = [...decided.refused, ...suppressed.map(({ refused }) => refused)];
        // Each refusal is recorded once the request is answered with it, not when a later check (the rate) refuses the whole request.
        const recordSuppressed = () =>
          suppressed.forEach(({ refused: { recipient }, match }) =>
            deps.suppression?.refused({ where: "api", sender: envelope.from, recipient, match, tenant, tags: labels.tags, metadata: labels.metadata }),
          );
        if (accepted.length === 0) {
          recordSuppressed();
          return yield* refuse(new ApiError({ code: "AllRecipientsRefused", message: "every recipient was refused; nothing was queued", refused }));
        }
        if (rates.count(tenant, now) >= config.maxSubmitsPerTenantPerMinute) {
          return yield* refuse(new ApiError({ code: "RateLimited", message: `tenant ${tenant} is over ${config.maxSubmitsPerTenantPerMinute} submits a minute on this node; slow down` }));
        }
        rates.add(tenant, now);
        recordSuppressed();
        return {
          tenant,
          sender: envelope.from,
          accepted,
          refused,
          dueAt,
          labels,
          idempotencyKey: options.idempotencyKey,
          pool: options.pool,
        } satisfies Prepared;
      });

    const recall: Submitter["recall"] = (tenant, key) =>
      key === undefined
        ? Effect.succeed(undefined)
        : Effect.map(Clock.currentTimeMillis, (now) => {
            const first = spool.recall(tenant, key, now) as SubmitReply | undefined;
            return first ? { ...first, duplicate: true } : undefined;
          });

    const start: Submitter["start"] = (prepared) =>
      Effect.map(Clock.currentTimeMillis, (receivedAt) => {
        const id = newMessageId(receivedAt);
        const body = spool.openBody(id);
        const signing = deps.dkim?.start(body, { envelopeSender: prepared.sender, at: receivedAt });
        const input = new PassThrough();
        const recipients = prepared.accepted.map((a) => a.recipient);
        let headerSection = "";
        const result = ingest(input, signing?.body ?? body, {
          // Applications write files with bare LF: the API makes them CRLF rather than refuse them.
          bareLineEndings: "normalize",
          maxLineOctets: config.longLines === "reject" ? MAX_LINE_OCTETS : undefined,
          allow8bit: true,
          prepend: (section) => {
            headerSection = section;
            return (
              apiReceivedHeader({ hostname: config.hostname, tenant: prepared.tenant, id, recipients, at: receivedAt }) +
              (deps.marks !== undefined && prepared.accepted.some((a) => !deps.isLocalUser(a.deliverTo)) ? deps.marks.headers(id) : "") +
              missingSubmissionHeaders(section, { id, hostname: config.hostname, at: receivedAt })
            );
          },
        });
        result.catch(() => undefined); // awaited by commit; an abandoned submission must not leave it unobserved
        return { id, receivedAt, body, signing, input, result, headerSection: () => headerSection };
      });

    const discard: Submitter["discard"] = (submission) => {
      if (!submission.input.destroyed) submission.input.destroy();
      (submission.signing?.body ?? submission.body).discard();
    };

    /** The body's end, the commit and its record: the part an idempotency key guards. */
    const commitOnce = (prepared: Prepared, submission: Submission): Effect.Effect<SubmitReply, ApiError> =>
      Effect.gen(function* () {
        const ended = yield* Effect.tryPromise({
          try: () => submission.result,
          catch: (error) => new ApiError({ code: "NotFound", message: `the body was abandoned before its end: ${String(error)}` }),
        });
        if (ended.problem === "too-large") return yield* refuse(new ApiError({ code: "TooLarge", message: `the message exceeds ${config.maxMessageBytes} bytes (limits.maxMessageBytes)` }));
        if (ended.problem === "line-too-long") {
          return yield* refuse(new ApiError({ code: "BadMessage", message: `the message has a line longer than ${MAX_LINE_OCTETS} octets (RFC 5321 section 4.5.3.1.6); encode it (quoted-printable or base64)` }));
        }
        if (ended.problem !== undefined) return yield* refuse(new ApiError({ code: "BadMessage", message: `the message has ${ended.problem === "nul" ? "NUL characters" : ended.problem}` }));
        if (deps.draining?.()) return yield* refuse(new ApiError({ code: "Unavailable", message: `node ${config.nodeId} is draining; retry (another node of the queue group answers)` }));
        if (!deps.spoolHealthy()) return yield* refuse(new ApiError({ code: "Unavailable", message: "the spool cannot commit now; retry later" }));
        const signed = yield* finishSigning(submission.signing);
        if (signed?._tag === "Failed") hooks.log("dkim.failed", { level: "warn", queueId: submission.id, via: "api", domain: signed.domain, error: signed.detail });
        const size = submission.body.size();
        const reply: SubmitReply = {
          messageId: submission.id,
          node: config.nodeId,
          tenant: prepared.tenant,
          accepted: prepared.accepted.map((a) => a.recipient),
          refused: prepared.refused,
          dueAt: prepared.dueAt,
          duplicate: false,
        };
        const { labels } = prepared;
        const pool = choosePool(config.pools, { sender: prepared.sender, requested: prepared.pool, header: (name) => headerValue(submission.headerSection(), name) });
        const message = {
          id: submission.id,
          sender: prepared.sender,
          receivedAt: submission.receivedAt,
          body: submission.body,
          routes: routesFor(prepared.accepted.map((a) => a.deliverTo), deps.isLocalUser, { onePerRemoteRecipient: deps.marks?.onePerRemoteRecipient === true }),
          attributes: { api: { tenant: labels.tenant }, tenant: labels.tenant, tags: labels.tags, metadata: labels.metadata, ...(pool !== undefined ? { pool } : {}) },
          notBefore: prepared.dueAt > submission.receivedAt ? prepared.dueAt : undefined,
          remember:
            prepared.idempotencyKey === undefined
              ? undefined
              : { scope: prepared.tenant, key: prepared.idempotencyKey, value: reply, expiresAt: submission.receivedAt + config.idempotencyTtlMs },
        };
        // The accepted events are committed with the message, as for SMTP.
        const committed = yield* Effect.exit(spool.accept(message, acceptedEvents(deps.events, message, size, yield* Clock.currentTimeMillis)));
        if (Exit.isFailure(committed)) {
          deps.spoolFailed();
          hooks.log("spool.commit.failed", { level: "error", queueId: submission.id, via: "api", error: String(committed.cause) });
          return yield* refuse(new ApiError({ code: "Unavailable", message: "temporary storage failure; retry with the same idempotency key" }));
        }
        hooks.accepted(submission.id, committed.value, size, labels);
        hooks.log("message.accepted", {
          queueId: submission.id,
          via: "api",
          tenant: labels.tenant,
          messageId: headerValue(submission.headerSection(), "message-id") ?? submissionMessageId(submission.id, config.hostname),
          sender: prepared.sender,
          recipients: reply.accepted,
          refused: reply.refused.length,
          size,
          ...(signed?._tag === "Signed" ? { dkim: `${signed.domain} (${signed.selectors.join(", ")})` } : {}),
          ...(prepared.dueAt > submission.receivedAt ? { dueAt: new Date(prepared.dueAt).toISOString() } : {}),
        });
        return reply;
      });

    /** Claims the key cluster-wide, then commits here, or answers with the reply of the node that has it. */
    const claimThenCommit = (prepared: Prepared, key: string, submission: Submission): Effect.Effect<SubmitReply, ApiError> =>
      Effect.gen(function* () {
        const claim = yield* deps.idempotency.claim(prepared.tenant, key).pipe(Effect.tapError((error) => Effect.sync(() => hooks.rejected(error.code))));
        if (claim._tag === "Mine") return yield* commitOnce(prepared, submission);
        hooks.log("api.idempotency.answered", { tenant: prepared.tenant, queueId: claim.reply.messageId, holder: claim.reply.node });
        return { ...claim.reply, duplicate: true };
      });

    /** Runs `commitOnce` unless the key already has a reply (remembered, being committed now, or on another node). */
    const withKey = (prepared: Prepared, submission: Submission): Effect.Effect<SubmitReply, ApiError> =>
      Effect.gen(function* () {
        const key = prepared.idempotencyKey;
        if (key === undefined) return yield* commitOnce(prepared, submission);
        const remembered = yield* recall(prepared.tenant, key);
        if (remembered) return remembered;
        const slot = slotOf(prepared.tenant, key);
        // Looking for a running commit and registering ours is one step, with no yield
        // between them: two submits of one key cannot both find none.
        const turn = yield* Effect.sync((): { readonly running: boolean; readonly deferred: Deferred.Deferred<SubmitReply, ApiError> } => {
          const running = pending.get(slot);
          if (running) return { running: true, deferred: running };
          const mine = Deferred.makeUnsafe<SubmitReply, ApiError>();
          pending.set(slot, mine);
          return { running: false, deferred: mine };
        });
        if (turn.running) {
          // Another submit with this key is committing: its reply is ours. If it failed, nothing was queued: try again.
          const first = yield* Effect.exit(Deferred.await(turn.deferred));
          return Exit.isSuccess(first) ? { ...first.value, duplicate: true } : yield* withKey(prepared, submission);
        }
        const mine = turn.deferred;
        const outcome = yield* Effect.exit(claimThenCommit(prepared, key, submission));
        pending.delete(slot);
        yield* Deferred.done(mine, outcome);
        return yield* outcome;
      });

    const commit: Submitter["commit"] = (prepared, submission) =>
      Effect.suspend(() => {
        if (committing >= config.maxConcurrentSubmits) {
          return refuse(new ApiError({ code: "Busy", message: `this node is committing ${committing} submits already; retry shortly` }));
        }
        committing++;
        return withKey(prepared, submission).pipe(Effect.ensuring(Effect.sync(() => void committing--)));
      });

    const recorded: Submitter["recorded"] = (tenant, key) =>
      Effect.gen(function* () {
        const running = pending.get(slotOf(tenant, key));
        if (running) {
          const first = yield* Effect.exit(Deferred.await(running));
          if (Exit.isSuccess(first)) return { ...first.value, duplicate: false };
        }
        const remembered = yield* recall(tenant, key);
        return remembered ? { ...remembered, duplicate: false } : undefined;
      });

    return { prepare, recall, recorded, start, commit, discard };
  });

// ---------------------------------------------------------------------------
// Whole bodies: raw bytes, or a structured message composed here.

const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}[\r\n]*$/;

export const decodeBase64 = (text: string, what: string): Effect.Effect<Buffer, ApiError> =>
  BASE64.test(text)
    ? Effect.succeed(Buffer.from(text, "base64"))
    : Effect.fail(new ApiError({ code: "BadMessage", message: `${what} is not base64` }));

/** Composes a structured message with MailComposer: its bytes (Bcc removed) and the envelope it implies. */
export const compose = (message: StructuredMessage, at: number): Effect.Effect<{ readonly bytes: Buffer; readonly envelope: { from: string | false; to: string[] } }, ApiError> =>
  Effect.gen(function* () {
    const attachments = yield* Effect.forEach(message.attachments ?? [], (attachment, n) =>
      Effect.map(decodeBase64(attachment.content, `attachments[${n}].content`), (content) => ({
        content,
        ...(attachment.filename !== undefined ? { filename: attachment.filename } : {}),
        ...(attachment.contentType !== undefined ? { contentType: attachment.contentType } : {}),
        ...(attachment.cid !== undefined ? { cid: attachment.cid } : {}),
        ...(attachment.contentDisposition !== undefined ? { contentDisposition: attachment.contentDisposition } : {}),
      })),
    );
    const addresses = (list: string | ReadonlyArray<string> | undefined) => (list === undefined || typeof list === "string" ? list : [...list]);
    const options = Object.fromEntries(
      Object.entries({
        from: message.from,
        to: addresses(message.to),
        cc: addresses(message.cc),
        bcc: addresses(message.bcc),
        replyTo: addresses(message.replyTo),
        subject: message.subject,
        text: message.text,
        html: message.html,
        headers: message.headers ? { ...message.headers } : undefined,
      }).filter(([, value]) => value !== undefined),
    );
    const node = yield* Effect.try({
      try: () => new MailComposer({ ...options, attachments, date: new Date(at) }).compile(),
      catch: (error) => new ApiError({ code: "BadMessage", message: `the message cannot be composed: ${String(error)}` }),
    });
    const envelope = node.getEnvelope() as { from: string | false; to: string[] };
    const bytes = yield* Effect.callback<Buffer, ApiError>((resume) => {
      node.build((error, built) =>
        resume(error ? Effect.fail(new ApiError({ code: "BadMessage", message: `the message cannot be composed: ${error.message}` })) : Effect.succeed(built)),
      );
    });
    return { bytes, envelope };
  });

/** Submits a whole body: checked, ingested and committed; the body is discarded unless committed. */
export const submitWhole = (
  submitter: Submitter,
  tenant: string,
  envelope: Envelope,
  options: SubmitOptionsInput,
  bytes: Uint8Array,
  maxMessageBytes: number,
): Effect.Effect<SubmitReply, ApiError> =>
  Effect.gen(function* () {
    // A retry of a remembered key gets its first reply before any check that counts (the rate limit).
    const remembered = yield* submitter.recall(tenant, options.idempotencyKey);
    if (remembered) return remembered;
    const prepared = yield* submitter.prepare(tenant, envelope, options);
    if (bytes.length > maxMessageBytes) return yield* new ApiError({ code: "TooLarge", message: `the message exceeds ${maxMessageBytes} bytes (limits.maxMessageBytes)` });
    return yield* Effect.acquireUseRelease(
      submitter.start(prepared),
      (submission) => Effect.suspend(() => {
        submission.input.end(bytes);
        return submitter.commit(prepared, submission);
      }),
      (submission) => Effect.sync(() => submitter.discard(submission)),
    );
  });
