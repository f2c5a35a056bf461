// Queue administration of one node, served over NATS (`tern queue …` talks to it):
// shape, list, show, suspend/resume a queue, retry now, bounce or delete by queue or
// sender, and one message (or entry) by id: show, retry, bounce, delete, hold, release.
// Operations that touch many entries go page by page, so memory stays bounded whatever
// the queue size; entries with an attempt in flight are passed over (and counted),
// because that attempt's outcome is about to be recorded. Hold and release are the
// exceptions: they are stored at once, and an attempt in flight is recorded with the entry
// staying as they left it.
//
// Served in a Scope: the NATS subscriptions end when it closes, and each request runs
// with the services the server was started with (its Clock among them).
import { Clock, Effect, type Scope } from "effect";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  QueueAdminError,
  QueueAdminReply,
  QueueAdminRequest,
  type EntryActOutcome,
  type EntryView,
  type MessageAction,
  type SiteBackoffView,
} from "../../protocol/queue-admin.ts";
import type { Subjects } from "../../protocol/subjects.ts";
import { everyone } from "../delivery/attempt.ts";
import type { Scheduler } from "../delivery/scheduler.ts";
import type { ThrottleView } from "../delivery/site-throttle.ts";
import { serveEndpoint, servedInScope, type Endpoint } from "../runtime/remote.ts";
import { queueOf, type QueueEntry } from "../queue/entry.ts";
import type { Selection, Spool } from "../queue/spool.ts";
import type { Log } from "../../protocol/log.ts";

const queueAdminEndpoint: Endpoint<QueueAdminRequest, QueueAdminReply, QueueAdminError> = {
  request: QueueAdminRequest,
  response: QueueAdminReply,
  error: QueueAdminError,
};

export interface QueueAdminDeps {
  readonly nodeId: string;
  readonly spool: Spool;
  readonly scheduler: Scheduler;
  /** Sites backed off now (automatic back-off); none listed when absent. */
  readonly throttled?: (() => ReadonlyArray<ThrottleView>) | undefined;
  /** Whether this node is draining (handing its queue to peers); never when absent. */
  readonly draining?: (() => boolean) | undefined;
  readonly log: Log;
}

/**
 * Requests that change entries. A draining node refuses them: a message it is handing to a
 * peer would be changed here after its copy left (a hold lost, a deleted message delivered
 * by the peer, a bounce beside a delivery). Once moved, the peer takes them.
 */
const CHANGES_ENTRIES: ReadonlySet<QueueAdminRequest["_tag"]> = new Set(["Act", "Retry", "Bounce", "Delete"]);

const backoffView = (view: ThrottleView): SiteBackoffView => ({
  site: view.site,
  ...(view.source !== undefined ? { source: view.source } : {}),
  level: view.level,
  connections: view.connections,
  gapMs: view.gapMs,
  ...(view.pausedUntil !== undefined ? { pausedUntil: view.pausedUntil } : {}),
  since: view.since,
  ...(view.nextStepAt !== undefined ? { nextStepAt: view.nextStepAt } : {}),
  ...(view.rule !== undefined ? { rule: view.rule } : {}),
  ...(view.reply !== undefined ? { reply: view.reply } : {}),
});

/** Answers on the cluster-wide subject and on this node's own, until the scope closes. */
export const serveQueueAdmin = (nc: NatsConnection, subjects: Subjects, deps: QueueAdminDeps): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const handle = (request: QueueAdminRequest) => answer(deps, request).pipe(Effect.map((value) => ({ value })));
    yield* servedInScope((run) => serveEndpoint(nc, subjects.queueAdmin, queueAdminEndpoint, handle, { run }));
    yield* servedInScope((run) => serveEndpoint(nc, subjects.queueAdminOf(deps.nodeId), queueAdminEndpoint, handle, { run }));
  });

const DEFAULT_LIST = 100;
const DEFAULT_SHAPE = 50;

export const answer = (deps: QueueAdminDeps, request: QueueAdminRequest): Effect.Effect<QueueAdminReply, QueueAdminError> => {
  const { spool, scheduler, nodeId } = deps;
  const failed = (detail: string) => new QueueAdminError({ node: nodeId, detail });
  const stored = <A>(effect: Effect.Effect<A, { readonly detail: string }>) => effect.pipe(Effect.mapError((e) => failed(e.detail)));
  const view = (entry: QueueEntry): EntryView => ({
    id: entry.id,
    queue: queueOf(entry.route),
    sender: entry.sender,
    recipients: entry.recipients,
    createdAt: entry.createdAt,
    attempts: entry.attempts,
    nextAttemptAt: entry.nextAttemptAt,
    reason: entry.reason,
    inFlight: scheduler.isInFlight(entry.id),
    suspended: spool.isSuspended(queueOf(entry.route)),
    ...(entry.heldAt !== undefined ? { heldAt: entry.heldAt } : {}),
    ...(entry.history ? { history: entry.history } : {}),
  });
  const selection = (r: { queue?: string | undefined; sender?: string | undefined }): Selection => ({ queue: r.queue?.toLowerCase(), sender: r.sender });
  const backedOff = () => (deps.throttled?.() ?? []).map(backoffView);
  const needsSelection = (r: { queue?: string | undefined; sender?: string | undefined }): Effect.Effect<void, QueueAdminError> =>
    r.queue === undefined && r.sender === undefined ? Effect.fail(failed("name a queue (--domain) or a sender (--sender)")) : Effect.void;

  if (CHANGES_ENTRIES.has(request._tag) && deps.draining?.()) {
    return Effect.fail(failed("draining: this node is handing its queue to other nodes; ask again in a moment, when the peer holding the message answers (tern queue show ID says which)"));
  }

  switch (request._tag) {
    case "Shape":
      return Clock.currentTimeMillis.pipe(
        Effect.flatMap((now) => Effect.promise(() => spool.shape(now, request.limit ?? DEFAULT_SHAPE))),
        Effect.map((shape) => ({
          _tag: "Shape" as const,
          node: nodeId,
          ...shape,
          held: [...scheduler.holds()].map(([queue, until]) => ({ queue, until })),
          inFlight: scheduler.inFlight(),
          backedOff: backedOff(),
        })),
      );
    case "Sites":
      return Effect.sync(() => ({ _tag: "Sites" as const, node: nodeId, sites: backedOff() }));
    case "List":
      return Effect.promise(() => spool.list(selection(request), request.limit ?? DEFAULT_LIST, request.after)).pipe(
        Effect.map((entries) => ({ _tag: "List" as const, node: nodeId, entries: entries.map(view) })),
      );
    case "Show":
      return Effect.sync(() => ({ _tag: "Show" as const, node: nodeId, id: request.id, entries: entriesNamed(spool, request.id).map(view) }));
    case "Act":
      return act(deps, request, stored);
    case "Suspend":
    case "Resume": {
      const queue = request.queue.toLowerCase();
      const suspend = request._tag === "Suspend";
      return stored(suspend ? spool.suspend(queue) : spool.resume(queue)).pipe(
        Effect.tap(() => Effect.sync(() => {
          deps.log(suspend ? "queue.suspended" : "queue.resumed", { queue });
          if (!suspend) scheduler.wake();
        })),
        Effect.as({ _tag: "Suspended" as const, node: nodeId, queue, suspended: suspend }),
      );
    }
    case "Retry":
      return walkChanging(deps, selection(request), (page, tally) =>
        Clock.currentTimeMillis.pipe(Effect.flatMap((now) => stored(spool.redate(page, now))), Effect.map((moved) => {
          tally.entries += moved.entries;
          tally.recipients += moved.recipients;
        })),
      ).pipe(
        Effect.tap(() => Effect.sync(() => {
          scheduler.release(request.queue?.toLowerCase());
          deps.log("queue.retry", { queue: request.queue, sender: request.sender });
        })),
      );
    case "Bounce": {
      const returned = { _tag: "Returned" as const, ...(request.reason ? { reason: request.reason.replace(/[\r\n]+/g, " ") } : {}) };
      return needsSelection(request).pipe(
        Effect.flatMap(() =>
          walkChanging(deps, selection(request), (page, tally) =>
            Effect.forEach(page, (entry) =>
              stored(scheduler.recordNow(entry, { server: "admin", results: everyone(entry.recipients, returned) })).pipe(
                Effect.map((recorded) => {
                  if (!recorded) return void tally.skipped++;
                  tally.entries++;
                  tally.recipients += entry.recipients.length;
                  if (entry.sender !== "") tally.notices++;
                }),
              ),
            ),
          ),
        ),
        Effect.tap(() => Effect.sync(() => deps.log("queue.bounced", { queue: request.queue, sender: request.sender }))),
      );
    }
    case "Delete":
      return needsSelection(request).pipe(
        Effect.flatMap(() =>
          walkChanging(deps, selection(request), (page, tally) =>
            Effect.forEach(page, (entry) =>
              stored(spool.finish(entry)).pipe(
                Effect.map(() => {
                  tally.entries++;
                  tally.recipients += entry.recipients.length;
                  deps.log("queue.deleted", { entry: entry.id, queueId: entry.messageId, sender: entry.sender, recipients: entry.recipients });
                }),
              ),
            ),
          ),
        ),
      );
  }
};

/** The entries an id names here: one entry (`<messageId>.<n>`), or every entry of a message, oldest first. */
const entriesNamed = (spool: Spool, id: string): ReadonlyArray<QueueEntry> => {
  if (/\.\d+$/.test(id)) {
    const entry = spool.entry(id);
    return entry ? [entry] : [];
  }
  return spool.entriesOf(id);
};

type ActRequest = Extract<QueueAdminRequest, { readonly _tag: "Act" }>;
type Stored = <A>(effect: Effect.Effect<A, { readonly detail: string }>) => Effect.Effect<A, QueueAdminError>;

/** What one action by id works on, and where it notes what became of each entry. */
interface ActContext {
  readonly deps: QueueAdminDeps;
  readonly request: ActRequest;
  readonly stored: Stored;
  readonly now: number;
  /** The entries the id names here. */
  readonly named: ReadonlyArray<QueueEntry>;
  /** Those without an attempt in flight (the others are noted "in-flight" already). */
  readonly idle: ReadonlyArray<QueueEntry>;
  readonly outcomes: Map<string, EntryActOutcome>;
  notices: number;
}

/** Each action by id; an entry it notes nothing for was in flight. */
const ACTIONS: Record<MessageAction, (context: ActContext) => Effect.Effect<void, QueueAdminError>> = {
  // An entry in flight is held too. One still waiting for a connection or the site's
  // budget is stopped before its transaction begins and goes back held, unsent; one whose
  // transaction has begun finishes that attempt, which is recorded, and what is left waits
  // held. The answer says which, so the operator is never told a message is held that is
  // about to leave.
  hold: ({ deps, stored, now, named, idle, outcomes }) =>
    Effect.map(stored(deps.spool.hold(named, now)), (ids) => {
      const held = new Set(ids);
      const waiting = new Set(idle.map((entry) => entry.id));
      for (const entry of named) {
        if (!held.has(entry.id)) outcomes.set(entry.id, "held");
        else if (waiting.has(entry.id)) outcomes.set(entry.id, "done");
        else outcomes.set(entry.id, deps.scheduler.holdInFlight(entry.id) === "stopped" ? "done" : "held-after-attempt");
      }
    }),
  release: ({ deps, stored, now, named, outcomes }) =>
    Effect.map(stored(deps.spool.release(named, now)), (ids) => {
      for (const entry of named) deps.scheduler.releaseInFlight(entry.id);
      const released = new Set(ids);
      for (const entry of named) outcomes.set(entry.id, released.has(entry.id) ? "done" : "not-held");
      if (released.size > 0) deps.scheduler.wake();
    }),
  // As a retry by domain: the destination is tried now, a hold after trouble on it lifted;
  // that alone makes an entry already due go now.
  retry: ({ deps, stored, now, idle, outcomes }) =>
    Effect.suspend(() => {
      const troubled = deps.scheduler.holds();
      const movable: QueueEntry[] = [];
      const lifted = new Set<string>();
      for (const entry of idle) {
        const queue = queueOf(entry.route);
        if (entry.heldAt !== undefined) outcomes.set(entry.id, "held");
        else if (entry.nextAttemptAt <= now && !troubled.has(queue)) outcomes.set(entry.id, "due");
        else {
          if (entry.nextAttemptAt > now) movable.push(entry);
          lifted.add(queue);
          outcomes.set(entry.id, "done");
        }
      }
      return Effect.map(stored(deps.spool.redate(movable, now)), () => lifted.forEach((queue) => deps.scheduler.release(queue)));
    }),
  bounce: (context) => {
    const { deps, request, stored, idle, outcomes } = context;
    const returned = { _tag: "Returned" as const, ...(request.reason ? { reason: request.reason.replace(/[\r\n]+/g, " ") } : {}) };
    return Effect.forEach(idle, (entry) =>
      Effect.map(stored(deps.scheduler.recordNow(entry, { server: "admin", results: everyone(entry.recipients, returned) })), (recorded) => {
        outcomes.set(entry.id, recorded ? "done" : "in-flight");
        if (recorded && entry.sender !== "") context.notices++;
      }),
    { discard: true });
  },
  delete: ({ deps, stored, idle, outcomes }) =>
    Effect.forEach(idle, (entry) => Effect.map(stored(deps.spool.finish(entry)), () => void outcomes.set(entry.id, "done")), { discard: true }),
};

const ACTED_EVENT = { retry: "queue.retry", bounce: "queue.bounced", delete: "queue.deleted", hold: "queue.held", release: "queue.released" } as const;

/** Carries out an action on the entries the id names here; each entry's outcome is reported (none: not here). */
const act = (deps: QueueAdminDeps, request: ActRequest, stored: Stored): Effect.Effect<QueueAdminReply, QueueAdminError> =>
  Effect.gen(function* () {
    const named = entriesNamed(deps.spool, request.id);
    const outcomes = new Map<string, EntryActOutcome>();
    const idle = named.filter((entry) => {
      const inFlight = deps.scheduler.isInFlight(entry.id);
      if (inFlight) outcomes.set(entry.id, "in-flight");
      return !inFlight;
    });
    const context: ActContext = { deps, request, stored, now: yield* Clock.currentTimeMillis, named, idle, outcomes, notices: 0 };
    yield* ACTIONS[request.action](context);
    for (const entry of named.filter((e) => outcomes.get(e.id) === "done")) {
      const extra = request.action === "delete" ? { sender: entry.sender, recipients: entry.recipients } : {};
      deps.log(ACTED_EVENT[request.action], { queueId: entry.messageId, entry: entry.id, ...extra });
    }
    return {
      _tag: "Acted" as const,
      node: deps.nodeId,
      id: request.id,
      action: request.action,
      entries: named.map((entry) => ({ id: entry.id, outcome: outcomes.get(entry.id) ?? "in-flight" })),
      notices: context.notices,
    };
  });

interface Tally {
  entries: number;
  recipients: number;
  skipped: number;
  notices: number;
}

/** Walks the selection a page at a time, passing over entries in flight, and reports the tally. */
const walkChanging = (
  deps: QueueAdminDeps,
  selection: Selection,
  change: (page: ReadonlyArray<QueueEntry>, tally: Tally) => Effect.Effect<unknown, QueueAdminError>,
): Effect.Effect<QueueAdminReply, QueueAdminError> =>
  Effect.suspend(() => {
    const tally: Tally = { entries: 0, recipients: 0, skipped: 0, notices: 0 };
    return deps.spool
      .walk(selection, (page) => {
        const idle = page.filter((entry) => !deps.scheduler.isInFlight(entry.id));
        tally.skipped += page.length - idle.length;
        return Effect.asVoid(change(idle, tally));
      })
      .pipe(
        Effect.mapError((error) => new QueueAdminError({ node: deps.nodeId, detail: `stopped part way: ${error.detail}` })),
        Effect.map(() => ({ _tag: "Changed" as const, node: deps.nodeId, ...tally })),
      );
  });
