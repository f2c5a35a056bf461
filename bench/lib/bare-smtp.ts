// smtp-server as the bench's own servers run it (the sink, the bare baseline, the floor
// peer): no AUTH, no STARTTLS, no reverse lookup, no logging, a 100 MB size limit. One
// set of options, so the floor relays through the same server the baseline measures.
import type { SMTPServerOptions } from "smtp-server";

export const bareServerOptions = {
  authOptional: true,
  disabledCommands: ["AUTH", "STARTTLS"],
  disableReverseLookup: true,
  logger: false,
  size: 100 * 1024 * 1024,
} satisfies SMTPServerOptions;
