// What delivery gets from an answer over NATS: a good route as is, a route outside this
// node's rules as a temporary failure, a permanent failure only when this node's own
// lookup agrees.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Effect } from "effect";
import { makeCheckedResolve, type CheckedResolveObserver, type Resolve } from "../../../actors/resolver/checked-resolve.ts";
import { makeRouteCheck } from "../../../actors/resolver/route-check.ts";
import { DnsPermanentFailure, DnsTemporaryFailure, type MailRoute } from "../../../protocol/route.ts";

const routeTo = (address: string): MailRoute => ({
  domain: "example.test",
  implicitMx: false,
  hosts: [{ name: "mx.example.test", preference: 10, addresses: [address] }],
});
const nullMx = new DnsPermanentFailure({ domain: "example.test", reason: "null-mx", detail: "null MX", server: "203.0.113.53:53", rcode: "NOERROR" });
const servfail = new DnsTemporaryFailure({ domain: "example.test", detail: "SERVFAIL", rcode: "SERVFAIL" });

/** The checked resolver over fixed answers, counting local lookups and recording what the observer heard. */
const setUp = (remote: Effect.Effect<MailRoute, DnsPermanentFailure | DnsTemporaryFailure>, local: Effect.Effect<MailRoute, DnsPermanentFailure | DnsTemporaryFailure>) => {
  const heard: Array<{ kind: keyof CheckedResolveObserver; detail: unknown }> = [];
  let localLookups = 0;
  const localResolve: Resolve = () => Effect.suspend(() => (localLookups++, local));
  const resolve = makeCheckedResolve({
    remote: () => remote,
    local: localResolve,
    check: makeRouteCheck(["127.0.0.2/32"]),
    observer: {
      rejected: (_domain, _claimed, problems) => heard.push({ kind: "rejected", detail: problems }),
      unconfirmed: (_domain, _claimed, found) => heard.push({ kind: "unconfirmed", detail: found }),
    },
  });
  return { resolve: (domain = "example.test") => Effect.runPromise(Effect.result(resolve(domain))), heard, localLookups: () => localLookups };
};

test("a route within policy is used as answered, without a lookup of this node's own", async () => {
  const { resolve, heard, localLookups } = setUp(Effect.succeed(routeTo("192.0.2.10")), Effect.die("not asked"));
  const result = await resolve();
  assert.equal(result._tag, "Success");
  assert.deepEqual(result._tag === "Success" && result.success, routeTo("192.0.2.10"));
  assert.equal(localLookups(), 0);
  assert.deepEqual(heard, []);
});

test("a route to a target outside allowedTargetNetworks is not used: this node's own lookup decides", async () => {
  const { resolve, heard, localLookups } = setUp(Effect.succeed(routeTo("127.0.0.1")), Effect.succeed(routeTo("127.0.0.2")));
  const result = await resolve();
  assert.deepEqual(result._tag === "Success" && result.success, routeTo("127.0.0.2"));
  assert.equal(localLookups(), 1);
  assert.deepEqual(heard.map((h) => h.kind), ["rejected"]);
});

test("a rejected route whose domain this node cannot resolve now defers: never a bounce on the rogue's word", async () => {
  const local = new DnsTemporaryFailure({ domain: "example.test", detail: "timeout" });
  const { resolve } = setUp(Effect.succeed(routeTo("127.0.0.1")), Effect.fail(local));
  const result = await resolve();
  assert.equal(result._tag === "Failure" && result.failure, local);
});

test("a permanent failure confirmed by this node's own lookup stands (the local one, with its own source)", async () => {
  const local = new DnsPermanentFailure({ domain: "example.test", reason: "nxdomain", detail: "NXDOMAIN here too", server: "127.0.0.1:53", rcode: "NXDOMAIN" });
  const { resolve, heard, localLookups } = setUp(Effect.fail(nullMx), Effect.fail(local));
  const result = await resolve();
  assert.equal(result._tag === "Failure" && result.failure, local);
  assert.equal(localLookups(), 1);
  assert.deepEqual(heard, []);
});

test("a permanent failure this node's own lookup contradicts gives way to the local route", async () => {
  const { resolve, heard } = setUp(Effect.fail(nullMx), Effect.succeed(routeTo("127.0.0.2")));
  const result = await resolve();
  assert.deepEqual(result._tag === "Success" && result.success, routeTo("127.0.0.2"));
  assert.deepEqual(heard, [{ kind: "unconfirmed", detail: routeTo("127.0.0.2") }]);
});

test("a permanent failure this node cannot confirm for now defers instead of bouncing", async () => {
  const { resolve, heard } = setUp(Effect.fail(nullMx), Effect.fail(servfail));
  const result = await resolve();
  const failure = result._tag === "Failure" ? result.failure : undefined;
  assert.ok(failure instanceof DnsTemporaryFailure, String(failure));
  assert.match(failure.detail, /^resolver answered "null MX", not confirmed by this node: SERVFAIL$/);
  assert.equal(failure.rcode, "SERVFAIL");
  assert.deepEqual(heard.map((h) => h.kind), ["unconfirmed"]);
});

test("a temporary failure passes through without a local lookup: it only delays", async () => {
  const { resolve, localLookups } = setUp(Effect.fail(servfail), Effect.die("not asked"));
  const result = await resolve();
  assert.equal(result._tag === "Failure" && result.failure, servfail);
  assert.equal(localLookups(), 0);
});
