// The suppression list's check before each delivery attempt: a recipient listed since
// its message was queued (it bounced or complained meanwhile, or was added by hand) is
// not sent to. It fails with the typed result `Suppressed` (a "suppressed" event, no DSN,
// see outcome.ts), while the entry's other recipients go on to their next hop as usual.
// The lookup is the node's in-memory view (actors/suppression/list.ts): no NATS round trip.
import { Effect } from "effect";
import type { SuppressionMatch } from "../../protocol/suppression.ts";
import type { RecipientAttempt } from "./attempt.ts";
import type { Dispatch } from "./dispatch.ts";

export type Lookup = (sender: string, recipient: string) => SuppressionMatch | undefined;

/** `dispatch` with the list checked first, for mail leaving the cluster (local mailboxes are never refused). */
export const checkingSuppressions = (dispatch: Dispatch, lookup: Lookup): Dispatch => (entry, message, body, mayStart) => {
  if (entry.route.kind === "local") return dispatch(entry, message, body, mayStart);
  const suppressed: RecipientAttempt[] = [];
  const rest: string[] = [];
  for (const recipient of entry.recipients) {
    const match = lookup(entry.sender, recipient);
    if (match === undefined) rest.push(recipient);
    else suppressed.push({ recipient, result: { _tag: "Suppressed", scope: match.scope, reason: match.reason } });
  }
  if (suppressed.length === 0) return dispatch(entry, message, body, mayStart);
  if (rest.length === 0) return Effect.succeed({ server: "suppression-list", results: suppressed });
  return Effect.map(dispatch({ ...entry, recipients: rest }, message, body, mayStart), (attempt) => ({ ...attempt, results: [...suppressed, ...attempt.results] }));
};
