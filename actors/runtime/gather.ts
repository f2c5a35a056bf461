// Asking every node at once (a request on a subject each node serves) and gathering the
// answers. Nobody knows how many will come, so the gathering ends once answers stop coming
// for `quietMs`, or sooner: once every node of `members` (the member list, asked for at the
// same time) has answered, which spares a command the quiet period in the common case.
import type { NatsConnection } from "@nats-io/transport-node";

export interface GatherOptions {
  /** How long to wait for the first answer (and for all of them). */
  readonly timeoutMs: number;
  /** Once answers come, how long a silence ends the gathering. */
  readonly quietMs?: number | undefined;
  /** The nodes expected to answer; undefined (or a list that could not be read): the silence ends it. */
  readonly members?: Promise<ReadonlySet<string> | undefined> | undefined;
}

const LISTED: unique symbol = Symbol("listed");

/** Each answer as `interpret` reads it; `nodeOf` names the node that gave it. */
export const gatherAnswers = async <A>(
  nc: NatsConnection,
  subject: string,
  payload: Uint8Array,
  interpret: (data: Uint8Array) => A,
  nodeOf: (answer: A) => string,
  options: GatherOptions,
): Promise<ReadonlyArray<A>> => {
  const replies = await nc.requestMany(subject, payload, { strategy: "stall", stall: options.quietMs ?? 1_000, maxWait: options.timeoutMs });
  const iterator = replies[Symbol.asyncIterator]();
  let members: ReadonlySet<string> | undefined;
  let listPending = options.members !== undefined;
  const listed = (options.members ?? Promise.resolve(undefined)).then(
    (set) => {
      members = set;
      listPending = false;
      return LISTED;
    },
    () => {
      listPending = false;
      return LISTED;
    },
  );
  const answers: A[] = [];
  const answered = new Set<string>();
  const everyoneAnswered = () => members !== undefined && members.size > 0 && [...members].every((node) => answered.has(node));
  // One `next` at a time: when the member list arrives first, the same pending `next` is awaited again.
  let pending: Promise<IteratorResult<{ readonly data: Uint8Array }>> | undefined;
  for (;;) {
    if (everyoneAnswered()) {
      void iterator.return?.();
      break;
    }
    pending ??= iterator.next();
    const woke = listPending ? await Promise.race([pending, listed]) : await pending;
    if (typeof woke === "symbol") continue;
    pending = undefined;
    if (woke.done) break;
    const answer = interpret(woke.value.data);
    answers.push(answer);
    answered.add(nodeOf(answer));
  }
  return answers;
};
