// The mailbox actors of this node: one per local user whose mailbox this node owns,
// spawned on first use and passivated (stopped, forgotten) after `idleMs` without asks.
// Each actor orders its user's asks; the store does the I/O. Up to WRITE_CONCURRENCY
// asks of one mailbox run at once so their LMDB commits share an fsync (LMDB still
// applies the writes one at a time, in order).
//
// The maildrop lock (POP3 [IN-USE], RFC 1939 §4) lives here, with the data, so it holds
// across the cluster: a retriever on any node opens the maildrop through this actor and
// gets a lease it renews; a retriever node that dies leaves a lease that simply expires.
// A restart of this node forgets every lock, and sessions holding one get LockLost.
//
// Lifetimes: the mailboxes live in the Scope they are made in (closing it stops every
// actor, letting queued and in-flight asks finish); an actor is stopped when it is
// passivated, which closes what its incarnations opened. Time (lease expiry, idleness) comes from the Clock
// captured when the mailboxes are made, so TestClock drives both in tests.
import { randomUUID } from "node:crypto";
import { Clock, Effect, Schedule, type Scope, Semaphore } from "effect";
import type { ActorRef, AskError } from "../runtime/actor.ts";
import { spawnActor } from "../runtime/actor.ts";
import type { Reply } from "../runtime/remote.ts";
import type { Supervisor } from "../runtime/supervisor.ts";
import {
  LockLost,
  MailboxUnavailable,
  MaildropInUse,
  NoSuchMessage,
  UnknownUser,
  parseUidl,
  uidlOf,
  MAILBOX_OPERATIONS,
  type MailboxError,
  type MailboxOperationName,
  type RequestOf,
  type ResponseOf,
} from "../../protocol/mailbox.ts";
import { topOfMessage } from "../../protocol/pop3.ts";
import { INBOX, type MailboxStore } from "./store.ts";
import { imapOperations } from "./imap-operations.ts";

/** One handler per mailbox operation: the same shape locally and over NATS. */
export type MailboxService = {
  readonly [K in MailboxOperationName]: (request: RequestOf<K>, attachment?: Uint8Array) => Effect.Effect<Reply<ResponseOf<K>>, MailboxError>;
};

export interface LocalMailboxes extends MailboxService {
  /** Mailbox actors alive now. */
  readonly active: () => number;
  /** Passivates every actor idle for `idleMs` or more that holds no live lock. */
  readonly sweep: () => Effect.Effect<void>;
  readonly stop: (graceMs: number) => Effect.Effect<void>;
  /**
   * Refuses every new ask for `user` (MailboxUnavailable with `detail`) and stops its
   * actor once the asks already taken are done (up to `graceMs`; one cut short gets no
   * answer, so its sender retries). A mailbox being moved away (actors/mailbox/move.ts).
   */
  readonly freeze: (user: string, detail: string, graceMs: number) => Effect.Effect<void>;
  readonly thaw: (user: string) => void;
}

export interface MailboxObserver {
  readonly stored?: (user: string, bytes: number) => void;
  readonly duplicate?: (user: string, entryId: string) => void;
  readonly overQuota?: (user: string) => void;
  readonly passivated?: (user: string) => void;
  /** Something in the user's mailbox changed (stored, flagged, removed, folders): IMAP sessions resync. */
  readonly changed?: (user: string) => void;
}

export interface LocalMailboxesOptions {
  readonly store: MailboxStore;
  readonly supervisor: Supervisor;
  /** Is this a local user? Mail for anyone else is refused with UnknownUser. */
  readonly knows: (user: string) => boolean;
  readonly quotaOf: (user: string) => number | undefined;
  readonly idleMs: number;
  readonly askTimeoutMs: number;
  /** When the scope closes, how long queued and in-flight asks may take to finish. Default 10 s. */
  readonly stopGraceMs?: number;
  readonly observer?: MailboxObserver;
}

const WRITE_CONCURRENCY = 16;
const MAILBOX_CAPACITY = 1_000;

type Ask = { [K in MailboxOperationName]: { readonly op: K; readonly request: RequestOf<K>; readonly attachment: Uint8Array | undefined } }[MailboxOperationName];

interface Lock {
  readonly token: string;
  readonly holder: string;
  readonly leaseMs: number;
  expiresAt: number;
}

interface Resident {
  readonly actor: ActorRef<Ask, Reply<unknown>, MailboxError>;
  lastUsed: number;
  lock: Lock | undefined;
}

const DEFAULT_STOP_GRACE_MS = 10_000;

export const makeLocalMailboxes = (options: LocalMailboxesOptions): Effect.Effect<LocalMailboxes, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock;
    // Actors run with the services the mailboxes were made with, not those of whoever asked first.
    const services = yield* Effect.context<never>();
    const spawning = yield* Semaphore.make(1);
    const mailboxes = localMailboxes(options, () => clock.currentTimeMillisUnsafe(), (spawn) =>
      spawning.withPermits(1)(spawn).pipe(Effect.provideContext(services)));
    yield* Effect.addFinalizer(() => mailboxes.stop(options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS));
    return mailboxes;
  });

/** Runs `spawn` one at a time (so two asks racing for a new user cannot spawn two actors), with the mailboxes' services. */
type SpawnGate = <A, E>(spawn: Effect.Effect<A, E>) => Effect.Effect<A, E>;

const localMailboxes = (options: LocalMailboxesOptions, now: () => number, gate: SpawnGate): LocalMailboxes => {
  const { store, observer = {} } = options;
  const residents = new Map<string, Resident>();
  /** Frozen mailboxes: why their asks are refused. */
  const frozen = new Map<string, string>();
  let stopping = false;

  // -- the operations, run inside the user's actor ---------------------------

  const inboxUidOf = (user: string, uidl: string): number | undefined => {
    const parsed = parseUidl(uidl);
    const folder = store.status(user, INBOX);
    return parsed && folder && parsed.uidValidity === folder.uidValidity ? parsed.uid : undefined;
  };

  const listing = (user: string) => {
    const uidValidity = store.status(user, INBOX)?.uidValidity ?? 0;
    return store.list(user, INBOX).map((message) => ({ uid: uidlOf(uidValidity, message.uid), size: message.size }));
  };

  /** The session's lock, renewed; a lock replaced by another session or forgotten by a restart is lost. */
  const holdLock = (user: string, resident: Resident, token: string): Effect.Effect<Lock, LockLost> => {
    const lock = resident.lock;
    if (lock === undefined || lock.token !== token) return Effect.fail(new LockLost({ user }));
    lock.expiresAt = now() + lock.leaseMs;
    return Effect.succeed(lock);
  };

  const liveLock = (resident: Resident): Lock | undefined =>
    resident.lock !== undefined && resident.lock.expiresAt > now() ? resident.lock : undefined;

  /**
   * The change notice is best effort and comes after the commit: an observer that throws
   * (NATS closed or draining at shutdown) must not turn a committed write into a defect.
   */
  const notifyChanged = (user: string) => {
    try {
      observer.changed?.(user);
    } catch {
      // A lost notice only delays a session's resync to its next command.
    }
  };

  const operations = (user: string, resident: Resident) => ({
    deliver: (request: RequestOf<"deliver">, body: Uint8Array | undefined) => {
      if (!options.knows(user)) return Effect.fail(new UnknownUser({ user }));
      const into = request.folder !== undefined ? { folder: request.folder } : {};
      return store.deliver(user, request.entryId, body ?? new Uint8Array(), { quotaBytes: options.quotaOf(user), ...into }).pipe(
        Effect.tap((stored) =>
          Effect.sync(() => {
            if (stored.duplicate) return observer.duplicate?.(user, request.entryId);
            observer.stored?.(user, body?.length ?? 0);
            notifyChanged(user);
          }),
        ),
        Effect.tapError((error) => Effect.sync(() => (error._tag === "OverQuota" ? observer.overQuota?.(user) : undefined))),
        Effect.map((stored) => ({ value: { uid: uidlOf(stored.uidValidity, stored.uid), duplicate: stored.duplicate } })),
      );
    },

    list: () => (options.knows(user) ? Effect.succeed({ value: { messages: listing(user) } }) : Effect.fail(new UnknownUser({ user }))),

    retrieve: (request: RequestOf<"retrieve">) =>
      Effect.gen(function* () {
        if (request.lock !== undefined) yield* holdLock(user, resident, request.lock);
        const uid = inboxUidOf(user, request.uid);
        const body = uid === undefined ? undefined : store.body(user, INBOX, uid);
        if (body === undefined) return yield* new NoSuchMessage({ user, uid: request.uid });
        const content = request.topLines === undefined ? body : topOfMessage(body, request.topLines);
        return { value: { size: content.length }, attachment: content };
      }),

    open: (request: RequestOf<"open">) => {
      if (!options.knows(user)) return Effect.fail(new UnknownUser({ user }));
      const held = liveLock(resident);
      if (held) return Effect.fail(new MaildropInUse({ user, holder: held.holder }));
      const lock: Lock = { token: randomUUID(), holder: request.holder, leaseMs: request.leaseMs, expiresAt: now() + request.leaseMs };
      resident.lock = lock;
      return Effect.succeed({ value: { lock: lock.token, messages: listing(user) } });
    },

    renew: (request: RequestOf<"renew">) => holdLock(user, resident, request.lock).pipe(Effect.as({ value: {} })),

    commit: (request: RequestOf<"commit">) =>
      Effect.gen(function* () {
        yield* holdLock(user, resident, request.lock);
        const uidsOf = (uidls: ReadonlyArray<string>) => uidls.flatMap((uidl) => inboxUidOf(user, uidl) ?? []);
        const removed = yield* store.expunge(user, INBOX, uidsOf(request.remove), uidsOf(request.seen));
        notifyChanged(user);
        return { value: { removed } };
      }).pipe(Effect.ensuring(Effect.sync(() => releaseIfHeld(resident, request.lock)))),

    release: (request: RequestOf<"release">) => Effect.sync(() => releaseIfHeld(resident, request.lock)).pipe(Effect.as({ value: {} })),

    ...imapOperations({
      store,
      user,
      knows: options.knows,
      quotaBytes: () => options.quotaOf(user),
      changed: () => notifyChanged(user),
    }),
  });

  const releaseIfHeld = (resident: Resident, token: string) => {
    if (resident.lock?.token === token) resident.lock = undefined;
  };

  const handlerFor = (user: string, resident: () => Resident) => {
    let built: ReturnType<typeof operations> | undefined;
    return (ask: Ask): Effect.Effect<Reply<unknown>, MailboxError> => {
      const ops = (built ??= operations(user, resident()));
      return runOperation(ops, ask);
    };
  };

  const runOperation = (ops: ReturnType<typeof operations>, ask: Ask): Effect.Effect<Reply<unknown>, MailboxError> => {
    switch (ask.op) {
      case "deliver":
        return ops.deliver(ask.request, ask.attachment);
      case "list":
        return ops.list();
      case "retrieve":
        return ops.retrieve(ask.request);
      case "open":
        return ops.open(ask.request);
      case "renew":
        return ops.renew(ask.request);
      case "commit":
        return ops.commit(ask.request);
      case "release":
        return ops.release(ask.request);
      case "folders":
        return ops.folders();
      case "view":
        return ops.view(ask.request);
      case "body":
        return ops.body(ask.request);
      case "flags":
        return ops.flags(ask.request);
      case "copy":
        return ops.copy(ask.request);
      case "expunge":
        return ops.expunge(ask.request);
      case "append":
        return ops.append(ask.request, ask.attachment);
      case "folder":
        return ops.folder(ask.request);
    }
  };

  // -- residents: spawned on demand, passivated when idle --------------------

  const residentFor = (user: string): Effect.Effect<Resident, MailboxUnavailable> =>
    Effect.suspend(() => {
      const existing = residents.get(user);
      if (existing) return Effect.succeed(existing);
      return gate(Effect.suspend(() => {
        // Stopped while this ask waited for the gate: an actor spawned now would never be stopped.
        if (stopping) return Effect.fail(new MailboxUnavailable({ user, detail: "node stopping" }));
        const freezing = frozen.get(user);
        if (freezing !== undefined) return Effect.fail(new MailboxUnavailable({ user, detail: freezing }));
        const spawnedMeanwhile = residents.get(user);
        return spawnedMeanwhile ? Effect.succeed(spawnedMeanwhile) : spawnResident(user);
      }));
    });

  const spawnResident = (user: string) =>
    Effect.gen(function* () {
      let resident: Resident | undefined;
      const actor = yield* spawnActor<Ask, Reply<unknown>, MailboxError>(
        {
          name: `mailbox/${user}`,
          capacity: MAILBOX_CAPACITY,
          concurrency: WRITE_CONCURRENCY,
          init: Effect.succeed(handlerFor(user, () => resident!)),
        },
        options.supervisor,
      );
      resident = { actor, lastUsed: now(), lock: undefined };
      residents.set(user, resident);
      return resident;
    });

  /** Stops the actor, waiting up to `graceMs` for its asks; its incarnations release what they opened. */
  const retire = (resident: Resident, graceMs: number) => resident.actor.stop(graceMs);

  const asUnavailable = (user: string) => (error: MailboxError | AskError): MailboxError => {
    switch (error._tag) {
      case "MailboxFull":
      case "AskTimeout":
      case "ActorCrashed":
      case "ActorStopped":
      case "ActorEscalated":
        return new MailboxUnavailable({ user, detail: error._tag });
      default:
        return error;
    }
  };

  const ask = (user: string, message: Ask, retries = 1): Effect.Effect<Reply<unknown>, MailboxError> =>
    Effect.suspend(() => {
      if (stopping) return Effect.fail(new MailboxUnavailable({ user, detail: "node stopping" }));
      const freezing = frozen.get(user);
      if (freezing !== undefined) return Effect.fail(new MailboxUnavailable({ user, detail: freezing }));
      return Effect.flatMap(residentFor(user), (resident) => {
        resident.lastUsed = now();
        return resident.actor.ask(message, options.askTimeoutMs);
      }).pipe(
        Effect.catch((error: MailboxError | AskError): Effect.Effect<Reply<unknown>, MailboxError> =>
          // Passivated between lookup and enqueue: a fresh actor takes the ask.
          error._tag === "ActorStopped" && retries > 0 && !stopping ? ask(user, message, retries - 1) : Effect.fail(asUnavailable(user)(error)),
        ),
      );
    });

  const sweep = () =>
    Effect.gen(function* () {
      const cutoff = now() - options.idleMs;
      for (const [user, resident] of [...residents]) {
        if (resident.lastUsed > cutoff || resident.actor.load() > 0 || liveLock(resident)) continue;
        residents.delete(user);
        yield* retire(resident, 0);
        observer.passivated?.(user);
      }
    });

  const service = {} as { -readonly [K in keyof MailboxService]: MailboxService[K] };
  for (const op of MAILBOX_OPERATIONS) {
    service[op] = ((request: { user: string }, attachment?: Uint8Array) =>
      ask(request.user, { op, request, attachment } as Ask)) as never;
  }

  return {
    ...service,
    active: () => residents.size,
    sweep,
    freeze: (user, detail, graceMs) =>
      Effect.suspend(() => {
        frozen.set(user, detail);
        const resident = residents.get(user);
        if (resident === undefined) return Effect.void;
        residents.delete(user);
        return retire(resident, graceMs);
      }),
    thaw: (user) => void frozen.delete(user),
    stop: (graceMs) =>
      Effect.suspend(() => {
        stopping = true;
        const all = [...residents.values()];
        residents.clear();
        return Effect.forEach(all, (resident) => retire(resident, graceMs), { concurrency: "unbounded", discard: true });
      }),
  };
};

/** Passivates idle mailbox actors every `everyMs`, for as long as the scope is open. */
export const passivateIdle = (mailboxes: LocalMailboxes, everyMs: number): Effect.Effect<void, never, Scope.Scope> =>
  mailboxes.sweep().pipe(Effect.repeat(Schedule.spaced(everyMs)), Effect.forkScoped, Effect.asVoid);
