// Tamper-evident tokens that name a message (and, per recipient, one of its recipients),
// so a report that comes back later can be matched to what was sent:
//   VERP return path   b-<token>@<bounce domain>   (the envelope sender of outbound mail)
//   header             X-Tern-Id: <token>          (added at acceptance, for feedback reports)
// where <token> is `<message id>-<mac>` or `<message id>-<recipient hash>-<mac>`, all lower
// case (some hosts lower-case local parts; message ids are upper-case base 36, so this
// loses nothing), at most 64 octets as RFC 5321 §4.5.3.1.1 allows a local part.
//
// The mac is HMAC-SHA256 under the node's feedback key over the message id and recipient
// hash, cut to 40 bits (base32): enough that guessing one costs more SMTP transactions than
// anyone can make, short enough for a local part. A token is checked at RCPT, before any
// lookup. Keys rotate: the first key signs, every key listed verifies, so bounces of mail
// sent before a rotation still match. The recipient hash (SHA-256 of the address in lower
// case, 40 bits) picks the recipient among the message's own, which the lookup lists.
import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/** What a valid token says. */
export interface FeedbackToken {
  /** The message's queue id (upper case, as everywhere else). */
  readonly messageId: string;
  /** Set for a per-recipient token: `recipientHash(address)` of the recipient it was sent to. */
  readonly recipientHash?: string | undefined;
}

export type TokenReading =
  | { readonly _tag: "Valid"; readonly token: FeedbackToken }
  /** Shaped like a token but its mac matches no key: made up, altered, or signed with a key since dropped. */
  | { readonly _tag: "Forged" }
  /** Not shaped like a token at all. */
  | { readonly _tag: "Malformed" };

export interface FeedbackTokens {
  /** `<id>-<mac>`: the message, for the X-Tern-Id header and message VERP. */
  readonly messageToken: (messageId: string) => string;
  /** `<id>-<hash>-<mac>`: one recipient of the message, for per-recipient VERP. */
  readonly recipientToken: (messageId: string, recipient: string) => string;
  readonly read: (token: string) => TokenReading;
}

/** The local part prefix of VERP addresses. */
export const VERP_PREFIX = "b-";

const MAC_BYTES = 5;
const HASH_BYTES = 5;
const TOKEN = /^([0-9a-z]{1,40})(?:-([a-z2-7]{8}))?-([a-z2-7]{8})$/;
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

/** RFC 4648 base32, lower case, no padding (5 bytes → 8 characters). */
const base32 = (bytes: Uint8Array): string => {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
};

/** The recipient part of a per-recipient token. */
export const recipientHash = (address: string): string => base32(createHash("sha256").update(address.toLowerCase()).digest().subarray(0, HASH_BYTES));

const macOf = (key: Uint8Array, messageId: string, hash: string | undefined): string =>
  base32(createHmac("sha256", key).update(`tern-feedback-v1\0${messageId.toUpperCase()}\0${hash ?? ""}`).digest().subarray(0, MAC_BYTES));

/** Tokens under `keys`: the first signs, each verifies. At least one key. */
export const makeFeedbackTokens = (keys: ReadonlyArray<Uint8Array>): FeedbackTokens => {
  if (keys.length === 0) throw new Error("feedback tokens need at least one key");
  const signing = keys[0]!;
  const make = (messageId: string, hash: string | undefined) =>
    [messageId.toLowerCase(), ...(hash !== undefined ? [hash] : []), macOf(signing, messageId, hash)].join("-");
  return {
    messageToken: (messageId) => make(messageId, undefined),
    recipientToken: (messageId, recipient) => make(messageId, recipientHash(recipient)),
    read: (text) => {
      const match = TOKEN.exec(text.toLowerCase());
      if (!match) return { _tag: "Malformed" };
      const [, id, hash, mac] = match;
      const given = Buffer.from(mac!);
      const valid = keys.some((key) => timingSafeEqual(Buffer.from(macOf(key, id!, hash)), given));
      if (!valid) return { _tag: "Forged" };
      return { _tag: "Valid", token: { messageId: id!.toUpperCase(), ...(hash !== undefined ? { recipientHash: hash } : {}) } };
    },
  };
};

/** `b-<token>@<domain>`. */
export const verpAddress = (token: string, bounceDomain: string): string => `${VERP_PREFIX}${token}@${bounceDomain}`;

/** The token of a VERP address at `bounceDomain`, or undefined when the address is not one (another domain, no prefix). */
export const tokenOfVerpAddress = (address: string, bounceDomain: string): string | undefined => {
  const at = address.lastIndexOf("@");
  if (at < 0 || address.slice(at + 1).toLowerCase() !== bounceDomain) return undefined;
  const local = address.slice(0, at).toLowerCase();
  return local.startsWith(VERP_PREFIX) ? local.slice(VERP_PREFIX.length) : undefined;
};

export type VerpMode = "off" | "message" | "recipient";

/**
 * The envelope sender an outbound attempt uses: the VERP address when VERP is on, else the
 * message's own. The null sender (DSNs) is never rewritten. A per-recipient token needs an
 * entry with one recipient (the session splits them when per-recipient VERP is on); an entry
 * accepted before that was turned on gets the message token.
 */
export const envelopeSenderOf = (
  tokens: FeedbackTokens,
  mode: VerpMode,
  bounceDomain: string,
  entry: { readonly messageId: string; readonly sender: string; readonly recipients: ReadonlyArray<string> },
): string => {
  if (mode === "off" || entry.sender === "") return entry.sender;
  const token = mode === "recipient" && entry.recipients.length === 1 ? tokens.recipientToken(entry.messageId, entry.recipients[0]!) : tokens.messageToken(entry.messageId);
  return verpAddress(token, bounceDomain);
};
