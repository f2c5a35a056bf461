// Administration of the suppression list: add, import, remove and list, for the operator
// (`tern suppress`, any scope) and for applications (the API, their tenant's sender
// domains only: "global" and other tenants' domains are the operator's). Both reach any
// node; the node writes the bucket and applies the change to its own view at once, and
// the other nodes see it through their watch.
import { Effect } from "effect";
import {
  GLOBAL_SCOPE,
  SuppressionAdminError,
  SuppressionAdminReply,
  SuppressionAdminRequest,
  normalAddress,
  normalScope,
  scopeToken,
  suppressionKey,
  type SuppressionAddRequest,
  type SuppressionChangeReply,
  type SuppressionImportRequest,
  type SuppressionListReply,
  type SuppressionListRequest,
  type SuppressionReason,
  type SuppressionRecord,
  type SuppressionRemoveRequest,
} from "../../protocol/suppression.ts";
import type { Endpoint } from "../runtime/remote.ts";
import type { SuppressionList } from "./list.ts";
import type { Log } from "../../protocol/log.ts";

/** `tern suppress` to any node (`tern.<cluster>.suppressions.admin`, queue group). */
export const suppressionAdminEndpoint: Endpoint<SuppressionAdminRequest, SuppressionAdminReply, SuppressionAdminError> = {
  request: SuppressionAdminRequest,
  response: SuppressionAdminReply,
  error: SuppressionAdminError,
};

/** The bucket as admin uses it (cluster/suppressions.ts). */
export interface SuppressionStore {
  /** Writes the record unless the key holds one; true when written. */
  readonly create: (key: string, record: SuppressionRecord) => Effect.Effect<boolean, { readonly detail: string }>;
  /** Removes the key's record; true when there was one. */
  readonly remove: (key: string) => Effect.Effect<boolean, { readonly detail: string }>;
  readonly get: (key: string) => Effect.Effect<SuppressionRecord | undefined, { readonly detail: string }>;
}

/** Who asks: the operator, or an application of a tenant that may manage `scopes` (its sender domains). */
export type Caller = { readonly kind: "operator" } | { readonly kind: "tenant"; readonly tenant: string; readonly scopes: ReadonlyArray<string> };

export interface SuppressionAdminDeps {
  readonly list: SuppressionList;
  readonly store: SuppressionStore;
  readonly node: string;
  readonly now: () => number;
  /** A record was written (for `tern_suppressions_added_total`). */
  readonly added: (reason: SuppressionReason) => void;
  readonly log: Log;
}

export interface SuppressionAdmin {
  readonly add: (caller: Caller, request: SuppressionAddRequest) => Effect.Effect<SuppressionChangeReply, SuppressionAdminError>;
  readonly import: (caller: Caller, request: SuppressionImportRequest) => Effect.Effect<SuppressionChangeReply, SuppressionAdminError>;
  readonly remove: (caller: Caller, request: SuppressionRemoveRequest) => Effect.Effect<SuppressionChangeReply, SuppressionAdminError>;
  readonly list: (caller: Caller, request: SuppressionListRequest) => Effect.Effect<SuppressionListReply, SuppressionAdminError>;
}

const DEFAULT_PAGE = 100;
/** Bucket calls in flight at once for one request. */
const CONCURRENCY = 32;

const unavailable = (error: { readonly detail: string }) => new SuppressionAdminError({ code: "Unavailable", message: `the suppression list cannot be reached now: ${error.detail}` });

/** The normal scope of a request's scope, when the caller may manage it. */
export const allowedScope = (caller: Caller, scope: string): string | SuppressionAdminError => {
  const normal = normalScope(scope);
  if (normal === undefined) return new SuppressionAdminError({ code: "BadRequest", message: `scope ${JSON.stringify(scope)}: expected "global" or a domain name` });
  if (caller.kind === "operator" || caller.scopes.includes(normal)) return normal;
  return new SuppressionAdminError({
    code: "ScopeNotAllowed",
    message:
      normal === GLOBAL_SCOPE
        ? `the global scope is the operator's (tern suppress); tenant ${caller.tenant} manages its sender domains' scopes`
        : `scope ${normal} is not a sender domain of tenant ${caller.tenant}`,
  });
};

export const makeSuppressionAdmin = (deps: SuppressionAdminDeps): SuppressionAdmin => {
  const { list, store } = deps;

  /** Writes each (scope, address) once, in the order given; the reply names each address as given. */
  const write = (entries: ReadonlyArray<{ readonly address: string; readonly scope: string }>, reason: SuppressionReason, detail: string | undefined) =>
    Effect.gen(function* () {
      const at = deps.now();
      const seen = new Set<string>();
      const unique = entries.filter(({ address, scope }) => {
        const key = suppressionKey(scope, address);
        return seen.has(key) ? false : (seen.add(key), true);
      });
      const written = yield* Effect.forEach(
        unique,
        ({ address, scope }) => {
          const key = suppressionKey(scope, address);
          const record: SuppressionRecord = { address, scope, reason, at, node: deps.node, ...(detail !== undefined ? { detail } : {}) };
          return Effect.map(store.create(key, record), (created) => {
            if (created) {
              list.put(key, reason);
              deps.added(reason);
            }
            return created;
          });
        },
        { concurrency: CONCURRENCY },
      ).pipe(Effect.mapError(unavailable));
      const reply: SuppressionChangeReply = {
        changed: unique.filter((_, n) => written[n]).map((e) => e.address),
        unchanged: unique.filter((_, n) => !written[n]).map((e) => e.address),
      };
      deps.log("suppression.added", { reason, added: reply.changed.length, present: reply.unchanged.length });
      return reply;
    });

  const scoped = (caller: Caller, scope: string) => {
    const allowed = allowedScope(caller, scope);
    return typeof allowed === "string" ? Effect.succeed(allowed) : Effect.fail(allowed);
  };

  return {
    add: (caller, request) =>
      Effect.flatMap(scoped(caller, request.scope), (scope) => write(request.addresses.map((address) => ({ address, scope })), "manual", request.detail)),

    import: (caller, request) =>
      Effect.flatMap(
        Effect.forEach(request.entries, (entry) => Effect.map(scoped(caller, entry.scope), (scope) => ({ address: entry.address, scope }))),
        (entries) => write(entries, "import", undefined),
      ),

    remove: (caller, request) =>
      Effect.gen(function* () {
        const scope = yield* scoped(caller, request.scope);
        const seen = new Set<string>();
        const addresses = request.addresses.filter((a) => (seen.has(normalAddress(a)) ? false : (seen.add(normalAddress(a)), true)));
        const removed = yield* Effect.forEach(
          addresses,
          (address) => {
            const key = suppressionKey(scope, address);
            return Effect.tap(store.remove(key), () => Effect.sync(() => list.remove(key)));
          },
          { concurrency: CONCURRENCY },
        ).pipe(Effect.mapError(unavailable));
        const reply: SuppressionChangeReply = {
          changed: addresses.filter((_, n) => removed[n]),
          unchanged: addresses.filter((_, n) => !removed[n]),
        };
        deps.log("suppression.removed", { scope, removed: reply.changed.length, absent: reply.unchanged.length });
        return reply;
      }),

    list: (caller, request) =>
      Effect.gen(function* () {
        const scopes =
          request.scope !== undefined
            ? new Set([scopeToken(yield* scoped(caller, request.scope))])
            : caller.kind === "tenant"
              ? new Set(caller.scopes.map(scopeToken))
              : undefined;
        const limit = request.limit ?? DEFAULT_PAGE;
        const page = list.page({ scopes, address: request.address, after: request.after, limit });
        const records = yield* Effect.forEach(page.keys, store.get, { concurrency: CONCURRENCY }).pipe(Effect.mapError(unavailable));
        const last = page.keys.at(-1);
        const more = last !== undefined && list.page({ scopes, address: request.address, after: last, limit: 1 }).keys.length > 0;
        return {
          // A key removed between the page and the read is left out.
          entries: records.filter((r): r is SuppressionRecord => r !== undefined),
          total: page.total,
          ...(more ? { next: last } : {}),
        };
      }),
  };
};
