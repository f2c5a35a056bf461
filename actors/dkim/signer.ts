// DKIM signing at acceptance (RFC 6376, relaxed/relaxed), with mailauth's signer. The
// signature is computed once, over the bytes the spool stores, while they stream in, and
// stored in front of them (BodyWriter.prepend): every delivery attempt then sends the same
// signed bytes, and a retry never re-signs.
//
// Which domain signs: the domain of the From header's first address (what DMARC aligns
// with), else the envelope sender's; each looked up as itself, then as each parent domain,
// so "example.org" signs mail from "news.example.org" too. A domain with two selectors (a
// key rotation) gets two DKIM-Signature headers, one per key.
//
// Who is signed is the caller's decision (see README "DKIM signing"): mail submitted by an
// authenticated user, from a trusted network or over the API, never inbound MX mail.
import { PassThrough } from "node:stream";
import { Effect } from "effect";
import { dkimSign } from "mailauth/lib/dkim/sign.js";
import type { DKIMSignOptions } from "mailauth";
import addressparser from "nodemailer/lib/addressparser";
import { domainOf } from "../common/domains.ts";
import type { BodyWriter } from "../queue/spool.ts";
import type { SigningKey, SigningKeys } from "./keys.ts";

export type DkimOutcome =
  | { readonly _tag: "Signed"; readonly domain: string; readonly selectors: ReadonlyArray<string> }
  /** No configured domain matches the From header or the envelope sender. */
  | { readonly _tag: "NoKey" }
  /** The signer refused (no From header, for one): the message goes unsigned. */
  | { readonly _tag: "Failed"; readonly domain: string; readonly detail: string };

/** One message being signed: ingest into `body`; after its end, `finish` prepends the signatures (it never rejects). */
export interface DkimSigning {
  readonly body: BodyWriter;
  readonly finish: () => Promise<DkimOutcome>;
}

/**
 * Signs a message whose body ended, if it is being signed. Mail whose signing fails is
 * still accepted, unsigned: a missing signature costs less than a refused message.
 */
export const finishSigning = (signing: DkimSigning | undefined): Effect.Effect<DkimOutcome | undefined> =>
  signing === undefined ? Effect.succeed(undefined) : Effect.promise(() => signing.finish());

export interface DkimSigner {
  /** Wraps `body`: what is appended goes to the spool and through the signer. `at` is the signing time (t=). */
  readonly start: (body: BodyWriter, facts: { readonly envelopeSender: string; readonly at: number }) => DkimSigning;
}

/** The header section is looked at for its From field up to this size (ingest holds no more either). */
const HEADER_LIMIT = 64 * 1024;

/** The keys of `domain` or of its nearest configured parent. */
const keysFor = (keys: SigningKeys, domain: string): ReadonlyArray<SigningKey> | undefined => {
  const labels = domain.toLowerCase().replace(/\.$/, "").split(".");
  for (let n = 0; n < labels.length - 1; n++) {
    const found = keys.get(labels.slice(n).join("."));
    if (found && found.length > 0) return found;
  }
  return undefined;
};

/** The domain of the first address of the From field, if the header section has one. */
export const fromDomain = (headerSection: string): string | undefined => {
  const field = /^from:[ \t]*(.*(?:\r?\n[ \t].*)*)/im.exec(headerSection);
  if (!field) return undefined;
  const address = addressparser(field[1]!.replace(/\r?\n/g, ""), { flatten: true }).find((a) => a.address.includes("@"))?.address;
  return address === undefined ? undefined : domainOf(address);
};

/** Where the header section ends in `bytes` (after its blank line), or -1. */
const headerEnd = (bytes: Buffer): number => {
  if (bytes.length >= 2 && bytes[0] === 13 && bytes[1] === 10) return 2;
  const at = bytes.indexOf("\r\n\r\n");
  return at === -1 ? -1 : at + 4;
};

export const makeDkimSigner = (keys: SigningKeys, options: { readonly headers?: ReadonlyArray<string> | undefined } = {}): DkimSigner => ({
  start: (body, facts) => {
    /** Bytes seen before the signing keys are chosen (the header section, held until its end). */
    let held: Buffer[] | undefined = [];
    let heldBytes = 0;
    let chosen: { readonly domain: string; readonly input: PassThrough; readonly result: ReturnType<typeof dkimSign> } | undefined;

    const choose = () => {
      const header = Buffer.concat(held ?? []).toString("latin1");
      const pending = held ?? [];
      held = undefined;
      const candidates = [fromDomain(header), facts.envelopeSender === "" ? undefined : domainOf(facts.envelopeSender)];
      for (const domain of candidates) {
        const found = domain === undefined ? undefined : keysFor(keys, domain);
        if (!found) continue;
        const input = new PassThrough();
        const signOptions = {
          canonicalization: "relaxed/relaxed",
          signTime: new Date(facts.at),
          ...(options.headers ? { headerList: [...options.headers] } : {}),
          signatureData: found.map((key) => ({
            signingDomain: key.domain,
            selector: key.selector,
            privateKey: key.pem(),
            algorithm: key.algorithm,
            canonicalization: "relaxed/relaxed",
          })),
        } as unknown as DKIMSignOptions; // mailauth's typings want a top-level key even when signatureData lists them
        const result = dkimSign(input, signOptions);
        result.catch(() => undefined); // awaited by finish; a discarded body must not leave it unobserved
        chosen = { domain: found[0]!.domain, input, result };
        for (const bytes of pending) input.write(bytes);
        return;
      }
    };

    /** Passes bytes to the signer; a promise when it wants the writer to wait. */
    const sign = (bytes: Uint8Array): Promise<void> | undefined => {
      if (held) {
        const copy = Buffer.from(bytes);
        held.push(copy);
        heldBytes += copy.length;
        if (heldBytes >= HEADER_LIMIT || headerEnd(Buffer.concat(held)) !== -1) choose();
        return undefined;
      }
      if (!chosen || chosen.input.write(bytes)) return undefined;
      const input = chosen.input;
      return new Promise((resolve) => {
        const done = () => {
          input.off("drain", done);
          input.off("close", done);
          resolve();
        };
        input.on("drain", done);
        input.on("close", done);
      });
    };

    const signing: BodyWriter = {
      append: (chunk) => {
        const stored = body.append(chunk);
        const signed = sign(chunk);
        return stored && signed ? Promise.all([stored, signed]).then(() => undefined) : (stored ?? signed);
      },
      size: body.size,
      prepend: body.prepend,
      discard: () => {
        chosen?.input.destroy();
        body.discard();
      },
      flushed: body.flushed,
    };

    return {
      body: signing,
      finish: async () => {
        if (held) choose();
        if (!chosen) return { _tag: "NoKey" };
        const { domain, input, result } = chosen;
        input.end();
        let signed;
        try {
          signed = await result;
        } catch (error) {
          return { _tag: "Failed", domain, detail: (error as Error).message };
        }
        if (signed.signatures === "") {
          const detail = signed.errors.map((e) => (e.err as Error | undefined)?.message ?? String(e.err)).join("; ") || "no signature was made";
          return { _tag: "Failed", domain, detail };
        }
        body.prepend(Buffer.from(signed.signatures, "latin1"));
        return { _tag: "Signed", domain, selectors: keysFor(keys, domain)!.map((k) => k.selector) };
      },
    };
  },
});
