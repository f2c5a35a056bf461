// DKIM signing keys (RFC 6376), read from files once at start and checked there, so a
// missing file, a key that is not a private key or a key of the wrong type stops the node
// with a message naming the domain and selector, never a message later.
//
// A key's PEM is kept in a closure (`SigningKey.pem`): it never appears when a key, the
// keys or the config are logged or turned into JSON.
import { createPrivateKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import { Effect, Schema } from "effect";

export type DkimAlgorithm = "rsa-sha256" | "ed25519-sha256";

/** One selector of a domain as configured: which key file signs with which algorithm. */
export interface DkimSelectorConfig {
  readonly selector: string;
  readonly algorithm: DkimAlgorithm;
  readonly keyFile: string;
}

export interface DkimConfig {
  /** Signing domain (d=) → its selectors; two during a key rotation, and each signs every message. */
  readonly domains: Readonly<Record<string, ReadonlyArray<DkimSelectorConfig>>>;
  /** Header fields to sign (h=); unset: mailauth's default list (From, To, Subject, Date, Message-ID, MIME headers, List-*…). */
  readonly headers?: ReadonlyArray<string> | undefined;
}

/** A loaded key: its PEM is reachable only through `pem()`. */
export interface SigningKey {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: DkimAlgorithm;
  readonly pem: () => Buffer;
}

/** Signing domain → its keys, loaded and checked. */
export type SigningKeys = ReadonlyMap<string, ReadonlyArray<SigningKey>>;

export class DkimKeyError extends Schema.TaggedError<DkimKeyError>()("DkimKeyError", {
  domain: Schema.String,
  selector: Schema.String,
  keyFile: Schema.String,
  detail: Schema.String,
}) {
  override get message() {
    return `dkim.domains[${JSON.stringify(this.domain)}] selector ${JSON.stringify(this.selector)}, key file ${this.keyFile}: ${this.detail}`;
  }
}

/** RFC 8301 §3.2: signers must use RSA keys of at least 1024 bits (2048 is what providers ask for). */
const MIN_RSA_BITS = 1024;

const keyTypeFor: Record<DkimAlgorithm, string> = { "rsa-sha256": "rsa", "ed25519-sha256": "ed25519" };

/** Why this PEM cannot sign with `algorithm`, or undefined when it can. */
const keyProblem = (pem: Buffer, algorithm: DkimAlgorithm): string | undefined => {
  let key;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch (error) {
    return `not a PEM private key (${(error as Error).message})`;
  }
  const type = key.asymmetricKeyType;
  if (type !== keyTypeFor[algorithm]) return `the key is ${type ?? "of an unknown type"}, but ${algorithm} needs an ${keyTypeFor[algorithm]} key`;
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (type === "rsa" && bits !== undefined && bits < MIN_RSA_BITS) return `an RSA key of ${bits} bits is too short: at least ${MIN_RSA_BITS} (RFC 8301), 2048 advised`;
  return undefined;
};

const loadKey = (domain: string, selector: DkimSelectorConfig): Effect.Effect<SigningKey, DkimKeyError> => {
  const fail = (detail: string) => new DkimKeyError({ domain, selector: selector.selector, keyFile: selector.keyFile, detail });
  return Effect.tryPromise({ try: () => readFile(selector.keyFile), catch: (error) => fail(`cannot be read (${(error as Error).message})`) }).pipe(
    Effect.flatMap((pem) => {
      const problem = keyProblem(pem, selector.algorithm);
      return problem === undefined
        ? Effect.succeed<SigningKey>({ domain, selector: selector.selector, algorithm: selector.algorithm, pem: () => pem })
        : Effect.fail(fail(problem));
    }),
  );
};

/** Reads and checks every configured key; fails on the first that cannot sign. */
export const loadSigningKeys = (config: DkimConfig): Effect.Effect<SigningKeys, DkimKeyError> =>
  Effect.map(
    Effect.forEach(Object.entries(config.domains), ([domain, selectors]) =>
      Effect.map(Effect.forEach(selectors, (selector) => loadKey(domain.toLowerCase(), selector)), (keys) => [domain.toLowerCase(), keys] as const),
    ),
    (entries) => new Map(entries),
  );
