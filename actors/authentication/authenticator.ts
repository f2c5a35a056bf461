// Inbound authentication of one message: SPF (client IP, HELO, MAIL FROM), DKIM (every
// signature), ARC (the chain) and DMARC (RFC 7208, 6376, 8617, 9989), with mailauth's
// checks and the node's resolver.
//
// The checks are composed here rather than through mailauth's `authenticate`: that entry
// point loads mailauth's BIMI code, whose HTTP client does not run on Node 20, and BIMI
// (fetching logos over HTTPS) is for mail clients, not for an MTA.
//
// Memory and time: the message streams through the DKIM verifier as it arrives (body hashes
// are computed on the way; only the header section is held, and the session refuses one over
// `maxHeaderBytes` before it reaches the verifier), so nothing is read back from the spool.
// SPF starts with the DATA command, beside the transfer. Once the message has ended, every
// DNS lookup still to come gets what is left of `timeoutMs`; a verdict that is still not
// there shortly after is given up for temperror on every method.
import { isIP } from "node:net";
import { PassThrough } from "node:stream";
import { Clock, Effect } from "effect";
import type { ARCResult, DNSResolver } from "mailauth";
import { arc } from "mailauth/lib/arc/index.js";
import { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { evaluateDmarc } from "mailauth/lib/dmarc/index.js";
import { spf } from "mailauth/lib/spf/index.js";
import { makeMailauthResolver, type ResolverDeps } from "./dns.ts";
import { policyFor, type InboundPolicies, type InboundPolicy } from "./policy.ts";
import { unavailableVerdict, verdictOf, type Verdict } from "./verdict.ts";

export interface InboundConfig {
  /** RFC 8601 authserv-id: the name in the fields this node writes, and in those it removes. */
  readonly authservId: string;
  /** How long the checks may still take once the message has ended. */
  readonly timeoutMs: number;
  /** A header section longer than this is refused (552 5.3.4) rather than held for the checks. */
  readonly maxHeaderBytes: number;
  /** The local DMARC policy by recipient domain (actors/authentication/policy.ts). */
  readonly dmarc: InboundPolicies;
}

/** Who sent the message, as the SMTP session saw it. */
export interface ClientIdentity {
  readonly ip: string;
  /** The EHLO/HELO argument. */
  readonly helo: string;
  /** MAIL FROM; "" for the null sender. */
  readonly sender: string;
}

/** The checks of one message under way. */
export interface Verification {
  /** The message as the client sent it, piece by piece; a promise asks the writer to wait. */
  readonly write: (bytes: Uint8Array) => Promise<void> | undefined;
  /** After the last byte: the verdict (never fails; trouble is temperror). */
  readonly finish: Effect.Effect<Verdict>;
  /** The transaction ends without a verdict wanted: stop reading. Harmless after `finish`. */
  readonly abandon: () => void;
}

export interface InboundAuthenticator {
  readonly authservId: string;
  readonly maxHeaderBytes: number;
  readonly policyFor: (recipientDomain: string) => InboundPolicy;
  readonly start: (client: ClientIdentity) => Verification;
}

/** How much longer than `timeoutMs` a verdict is waited for (CPU work after the last lookup). */
const GRACE_MS = 2_000;

/** The HELO identity as SPF checks it: an address literal in brackets, the IP when none was given (as mailauth's authenticate does). */
export const heloIdentity = (client: ClientIdentity): string => {
  const helo = client.helo || client.ip;
  return isIP(helo) ? `[${helo}]` : helo;
};

const check = async (input: PassThrough, client: ClientIdentity, resolver: DNSResolver, authservId: string): Promise<Verdict> => {
  const sender = client.sender === "" ? undefined : client.sender;
  // Started first: it needs nothing of the message, so it runs while the message arrives.
  const spfChecked = spf({ sender: sender!, ip: client.ip, helo: heloIdentity(client), mta: authservId, resolver });
  spfChecked.catch(() => undefined); // awaited below; the DKIM verifier may fail first
  const dkim = await dkimVerify(input, { resolver, ...(sender !== undefined ? { sender } : {}) });
  const spfResult = await spfChecked;
  const arcResult: ARCResult = await arc(dkim.arc as Parameters<typeof arc>[0], { resolver, ip: client.ip });
  const dmarc = await evaluateDmarc({
    headerFrom: dkim.headerFrom,
    fromFields: dkim.fromFields,
    spfDomains: spfResult.status.result === "pass" && spfResult.domain ? [spfResult.domain] : [],
    dkimDomains: (dkim.results ?? [])
      .filter((r) => r.status.result === "pass" && r.signingDomain !== undefined)
      .map((r) => ({ id: r.id, domain: r.signingDomain!, aligned: r.status.aligned, underSized: r.status.underSized })),
    arcResult,
    resolver,
  });
  return verdictOf({ dkim, spf: spfResult, arc: arcResult, dmarc });
};

export const makeInboundAuthenticator = (config: InboundConfig, deps: ResolverDeps): InboundAuthenticator => ({
  authservId: config.authservId,
  maxHeaderBytes: config.maxHeaderBytes,
  policyFor: (domain) => policyFor(config.dmarc, domain),
  start: (client) => {
    let deadline: number | undefined;
    const resolver = makeMailauthResolver(deps, () => deadline) as DNSResolver;
    const input = new PassThrough();
    input.on("error", () => undefined); // abandon's error ends the verifier; it is no fault
    const verdict = check(input, client, resolver, config.authservId).catch((error: unknown) =>
      unavailableVerdict(`authentication failed: ${error instanceof Error ? error.message : String(error)}`),
    );
    return {
      write: (bytes) => {
        if (input.destroyed || input.writableEnded || input.write(bytes)) return undefined;
        return new Promise<void>((resolve) => {
          const done = () => {
            input.off("drain", done);
            input.off("close", done);
            resolve();
          };
          input.on("drain", done);
          input.on("close", done);
        });
      },
      finish: Effect.gen(function* () {
        deadline = (yield* Clock.currentTimeMillis) + config.timeoutMs;
        input.end();
        return yield* Effect.promise(() => verdict).pipe(
          Effect.timeoutOrElse({ duration: config.timeoutMs + GRACE_MS, orElse: () => Effect.succeed(unavailableVerdict("authentication timed out")) }),
        );
      }),
      abandon: () => {
        if (!input.writableEnded) input.destroy(new Error("the transaction ended"));
      },
    };
  },
});
