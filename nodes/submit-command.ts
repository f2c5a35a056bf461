// `tern submit`: submits a message over the NATS API (cluster/client.ts), from a file,
// standard input, or flags, and prints the message id with the accepted and refused
// recipients once the node committed it.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import addressparser from "nodemailer/lib/addressparser";
import { connectTern, TernApiError, type SubmitOptions } from "../cluster/client.ts";
import { embeddedCredentials } from "../cluster/embedded-nats.ts";
import { securityOptions, type NatsSecurity } from "../cluster/nats-auth.ts";
import { NatsUnavailable } from "../cluster/nats.ts";
import type { SubmitReply } from "../protocol/api.ts";
import { connect } from "@nats-io/transport-node";
import { ConfigError, loadConfig, type NodeConfig } from "./config.ts";
import type { Output } from "./queue-command.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const submitUsage = `usage: tern submit [--config FILE] [--tenant T] [--json] [--timeout MS] [options] [FILE | -]
  FILE or - (stdin): an RFC 5322 message, sent as is; the envelope is --from/--to, else
                     its From, To, Cc and Bcc header fields
  without FILE, the message is composed from flags:
    --from A --to B [--to C] [--cc D] [--bcc E] [--reply-to F] --subject S
    --text T | --html H   [--attach PATH]... [--header "Name: value"]...
  --idempotency-key K   a retry with the same key returns the first message id
  --send-at TIME        ISO 8601 or epoch ms: not delivered before then
  --tag T...            --meta key=value...   labels carried into every event
NATS credentials as for tern node (config or TERN_NATS_* environment); with the embedded
server and none configured, the application user it generated.`;

export const runSubmit = (args: string[]): Promise<number> => submitCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

const submitCommand = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      tenant: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      from: { type: "string" },
      to: { type: "string", multiple: true },
      cc: { type: "string", multiple: true },
      bcc: { type: "string", multiple: true },
      "reply-to": { type: "string" },
      subject: { type: "string" },
      text: { type: "string" },
      html: { type: "string" },
      attach: { type: "string", multiple: true },
      header: { type: "string", multiple: true },
      "idempotency-key": { type: "string" },
      "send-at": { type: "string" },
      tag: { type: "string", multiple: true },
      meta: { type: "string", multiple: true },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    io.out(submitUsage);
    return 0;
  }
  const timeoutMs = timeoutOption(values.timeout, 60_000);
  if (timeoutMs === undefined) {
    io.err(`tern: ${badTimeout(values.timeout)}\n${submitUsage}`);
    return 2;
  }
  const options: SubmitOptions = {
    ...(values["idempotency-key"] !== undefined ? { idempotencyKey: values["idempotency-key"] } : {}),
    ...(values["send-at"] !== undefined ? { sendAt: /^\d+$/.test(values["send-at"]) ? Number(values["send-at"]) : values["send-at"] } : {}),
    ...(values.tag ? { tags: values.tag } : {}),
    ...(values.meta ? { metadata: Object.fromEntries(values.meta.map(keyValue)) } : {}),
  };
  const config = await loadConfig(values.config, process.env);
  const source = positionals[0];
  const tern = await connectTern({
    cluster: config.cluster,
    tenant: values.tenant ?? "default",
    nc: await connectAsApplication(config),
    timeoutMs,
  });
  try {
    const reply =
      source !== undefined
        ? await submitFile(tern.submitRaw, source, values, options)
        : await tern.submit(
            {
              from: need(values.from, "--from"),
              ...(values.to ? { to: values.to } : {}),
              ...(values.cc ? { cc: values.cc } : {}),
              ...(values.bcc ? { bcc: values.bcc } : {}),
              ...(values["reply-to"] ? { replyTo: values["reply-to"] } : {}),
              ...(values.subject !== undefined ? { subject: values.subject } : {}),
              ...(values.text !== undefined ? { text: values.text } : {}),
              ...(values.html !== undefined ? { html: values.html } : {}),
              ...(values.header ? { headers: Object.fromEntries(values.header.map(headerField)) } : {}),
              ...(values.attach
                ? { attachments: await Promise.all(values.attach.map(async (path) => ({ filename: basename(path), content: await readFile(path) }))) }
                : {}),
            },
            options,
          );
    io.out(values.json ? JSON.stringify(reply) : render(reply));
    return 0;
  } catch (error) {
    if (!(error instanceof TernApiError)) throw error;
    io.err(`tern: ${error.message}`);
    for (const r of error.refused) io.err(`  refused ${r.recipient}: ${r.reply}`);
    return error.code === "Unavailable" || error.code === "Busy" ? 69 : 1; // EX_UNAVAILABLE
  } finally {
    await tern.nc.close();
  }
};

const submitFile = async (
  submitRaw: Awaited<ReturnType<typeof connectTern>>["submitRaw"],
  source: string,
  values: { from?: string | undefined; to?: string[] | undefined },
  options: SubmitOptions,
): Promise<SubmitReply> => {
  const raw = source === "-" ? await readStdin() : await readFile(source).catch((error: Error) => {
    throw new ConfigError(`cannot read ${source}: ${error.message}`);
  });
  const fields = headerFields(raw);
  const from = values.from ?? addressesOf(fields, ["from"])[0];
  const to = values.to ?? addressesOf(fields, ["to", "cc", "bcc"]);
  if (from === undefined || to.length === 0) throw new ConfigError("the message names no sender or no recipient: give --from and --to");
  return submitRaw(raw, { from, to }, options);
};

const readStdin = async (): Promise<Buffer> => {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
};

/** The unfolded header fields of a message, name lower-cased. */
const headerFields = (raw: Buffer): Array<[string, string]> => {
  const text = raw.toString("latin1");
  const end = text.search(/\r?\n\r?\n/);
  const section = (end === -1 ? text : text.slice(0, end)).replace(/\r?\n[ \t]+/g, " ");
  return section.split(/\r?\n/).flatMap((line) => {
    const colon = line.indexOf(":");
    return colon > 0 ? [[line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as [string, string]] : [];
  });
};

const addressesOf = (fields: Array<[string, string]>, names: string[]): string[] =>
  fields
    .filter(([name]) => names.includes(name))
    .flatMap(([, value]) => addressparser(value, { flatten: true }).map((a) => a.address))
    .filter((address) => address !== "");

const keyValue = (pair: string): [string, string] => {
  const at = pair.indexOf("=");
  if (at <= 0) throw new ConfigError(`--meta expects key=value, got ${JSON.stringify(pair)}`);
  return [pair.slice(0, at), pair.slice(at + 1)];
};

const headerField = (field: string): [string, string] => {
  const at = field.indexOf(":");
  if (at <= 0) throw new ConfigError(`--header expects "Name: value", got ${JSON.stringify(field)}`);
  return [field.slice(0, at).trim(), field.slice(at + 1).trim()];
};

const need = (value: string | undefined, flag: string): string => {
  if (value === undefined) throw new ConfigError(`tern submit needs ${flag} (or a message file)\n${submitUsage}`);
  return value;
};

const render = (reply: SubmitReply): string =>
  [
    `${reply.duplicate ? "already queued" : "queued"} as ${reply.messageId} on node ${reply.node}${reply.dueAt > Date.now() ? `, due ${new Date(reply.dueAt).toISOString()}` : ""}`,
    ...reply.accepted.map((r) => `  accepted ${r}`),
    ...reply.refused.map((r) => `  refused ${r.recipient}: ${r.reply}`),
  ].join("\n");

/** Connects with the configured credentials; without any, with the embedded server's application user. */
const connectAsApplication = async (config: NodeConfig) => {
  const attempt = async (security: NatsSecurity) =>
    connect({ servers: [...config.nats.servers], name: "tern-submit", timeout: 2_000, ...(await securityOptions(security)) });
  const configured = attempt(config.nats);
  const connected =
    config.nats.auth.kind === "none" && config.nats.embedded ? configured.catch(() => attempt(embeddedCredentials(config.dataDir, "application"))) : configured;
  return connected.catch((error: Error) => {
    throw new NatsUnavailable(`no NATS server lets tern submit in at ${config.nats.servers.join(", ")}: ${error.message}`);
  });
};
