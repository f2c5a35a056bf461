// The NATS API driver: the same messages as the SMTP driver (load.ts builds them), handed
// to `submitRaw` with their envelope by `connections` concurrent submitters. They share
// one NATS connection, as an application would: NATS multiplexes requests on it.
import { TernApiError, type TernClient } from "../../cluster/client.ts";
import { driveLoad, type Channel, type LoadOptions, type LoadResult } from "./load.ts";

/**
 * A submitter. The latency runs from the request to the reply that says the message is
 * committed, so it includes sending the body (SMTP's starts after the body, at the final ".").
 * A typed refusal (Busy, RateLimited, …) is a refusal; Unavailable (no reply) is a failure.
 */
const apiChannel = (client: TernClient): Channel => ({
  send: async (from, to, message) => {
    const started = performance.now();
    try {
      const reply = await client.submitRaw(message, { from, to: [...to] });
      return { accepted: reply.accepted.length > 0, latencyMs: performance.now() - started, reply: `submitted ${reply.messageId}`, queueId: reply.messageId };
    } catch (error) {
      if (error instanceof TernApiError && error.code !== "Unavailable") return { accepted: false, latencyMs: 0, reply: error.message, queueId: undefined };
      throw error;
    }
  },
  close: async () => undefined,
  destroy: () => undefined,
});

export const runApiLoad = (options: LoadOptions, client: TernClient): Promise<LoadResult> => {
  const channel = apiChannel(client);
  return driveLoad(options, async () => channel, true);
};
