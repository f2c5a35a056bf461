// What inbound authentication concluded about one message, as values: each method's
// result (SPF, every DKIM signature, ARC, DMARC with the sender's policy), and the resinfo
// rows of the Authentication-Results field (RFC 8601) in mailauth's wording. Pure: built
// from mailauth's results, read by the policy decision, the header and the metrics.
import type { ARCResult, DKIMVerifyResult, DMARCResult, SPFResult } from "mailauth";

/** RFC 8601 result keywords (as mailauth reports them). */
export type MethodResult = string;

/** A domain's own DMARC policy (RFC 9989 "p", "sp", "np"; lowered by t=y), as published. */
export type SenderPolicy = "none" | "quarantine" | "reject";

/** Why DMARC could not be evaluated (RFC 9989 §5.3.1), as mailauth names it. */
export type DmarcSkipReason = "no-author-domain" | "multiple-author-domains" | "invalid-author-domain" | "multiple-from-fields";

export interface DmarcVerdict {
  readonly result: "pass" | "fail" | "none" | "temperror" | "permerror";
  /** The sender's policy for this message when a record was found (and the evaluation got that far). */
  readonly policy: SenderPolicy | undefined;
  /** The author domain (RFC5322.From), when there is exactly one. */
  readonly domain: string | undefined;
  /** DMARC could not be evaluated because the message names more than one author (From fields or domains). */
  readonly severalAuthors: boolean;
}

export interface Verdict {
  readonly spf: MethodResult;
  /** One result per DKIM-Signature, in order; ["none"] for an unsigned message. */
  readonly dkim: ReadonlyArray<MethodResult>;
  readonly arc: MethodResult;
  readonly dmarc: DmarcVerdict;
  /** RFC 8601 resinfo rows, in the order they are written: dkim…, spf, arc, dmarc. */
  readonly rows: ReadonlyArray<string>;
}

/** What mailauth's checks returned for one message (the DMARC part as evaluateDmarc gives it). */
export interface MailauthResults {
  readonly dkim: Pick<DKIMVerifyResult, "results">;
  readonly spf: Pick<SPFResult, "status" | "info">;
  readonly arc: Pick<ARCResult, "status" | "info">;
  readonly dmarc: { readonly response: Pick<DMARCResult, "status" | "info" | "policy"> | false; readonly reason?: string | undefined };
}

const SENDER_POLICIES: ReadonlySet<string> = new Set(["none", "quarantine", "reject"]);
const DMARC_RESULTS: ReadonlySet<string> = new Set(["pass", "fail", "none", "temperror", "permerror"]);

/** "multiple-from-fields" and "multiple-author-domains" name several authors; the others do not. */
const SEVERAL_AUTHORS: ReadonlySet<string> = new Set(["multiple-from-fields", "multiple-author-domains"]);

const dmarcOf = (dmarc: MailauthResults["dmarc"]): { verdict: DmarcVerdict; row: string } => {
  const { response, reason } = dmarc;
  if (response === false) {
    // No From address gives DMARC nothing to say (none); several authors, or one that is no
    // domain, make it unevaluable (permerror), which the local policy treats as suspicious.
    const result = reason === undefined || reason === "no-author-domain" ? "none" : "permerror";
    const comment = reason === undefined || reason === "no-author-domain" ? "no author domain" : reason.replace(/-/g, " ");
    return {
      verdict: { result, policy: undefined, domain: undefined, severalAuthors: reason !== undefined && SEVERAL_AUTHORS.has(reason) },
      row: `dmarc=${result} (${comment})`,
    };
  }
  const result = DMARC_RESULTS.has(response.status.result) ? (response.status.result as DmarcVerdict["result"]) : "permerror";
  const policy = response.status.result !== "temperror" && SENDER_POLICIES.has(response.policy) ? (response.policy as SenderPolicy) : undefined;
  const domain = typeof response.status.header?.from === "string" ? response.status.header.from : undefined;
  return { verdict: { result, policy, domain, severalAuthors: false }, row: response.info ?? `dmarc=${result}` };
};

/** The verdict of mailauth's results. */
export const verdictOf = (results: MailauthResults): Verdict => {
  const signatures = results.dkim.results ?? [];
  const dkim = signatures.length === 0 ? ["none"] : signatures.map((s) => s.status.result);
  const dkimRows = signatures.length === 0 ? ["dkim=none (message not signed)"] : signatures.map((s) => s.info);
  const dmarc = dmarcOf(results.dmarc);
  return {
    spf: results.spf.status.result,
    dkim,
    arc: results.arc.status.result,
    dmarc: dmarc.verdict,
    rows: [...dkimRows, results.spf.info, results.arc.info ?? `arc=${results.arc.status.result}`, dmarc.row],
  };
};

/**
 * The verdict when the checks could not finish (time ran out, or mailauth failed): every
 * method temperror, so nothing is refused or filed as junk for lack of an answer.
 */
export const unavailableVerdict = (why: string): Verdict => {
  const comment = why.replace(/[()\\\r\n]/g, " ").slice(0, 200);
  return {
    spf: "temperror",
    dkim: ["temperror"],
    arc: "temperror",
    dmarc: { result: "temperror", policy: undefined, domain: undefined, severalAuthors: false },
    rows: ["dkim", "spf", "arc", "dmarc"].map((method) => `${method}=temperror (${comment})`),
  };
};

/** Each method's results, for counting: one per DKIM signature, one for each other method. */
export const methodResults = (verdict: Verdict): ReadonlyArray<{ readonly method: "spf" | "dkim" | "arc" | "dmarc"; readonly result: string }> => [
  { method: "spf", result: verdict.spf },
  ...verdict.dkim.map((result) => ({ method: "dkim" as const, result })),
  { method: "arc", result: verdict.arc },
  { method: "dmarc", result: verdict.dmarc.result },
];
