// `tern suppress add|remove|list|import`: the cluster's suppression list, as the operator
// (any scope, "global" included), asked of any node over NATS (actors/suppression/admin.ts).
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { Cause, Effect, Exit } from "effect";
import { suppressionAdminEndpoint } from "../actors/suppression/admin.ts";
import { callEndpoint } from "../actors/runtime/remote.ts";
import { MAX_BATCH, MAX_PAGE, normalScope, type SuppressionAdminRequest, type SuppressionRecord } from "../protocol/suppression.ts";
import { makeSubjects } from "../protocol/subjects.ts";
import { loadConfig } from "./config.ts";
import { connectAsOperator } from "./operator-connection.ts";
import type { Output } from "./queue-command.ts";
import { badTimeout, timeoutOption } from "./timeout-option.ts";

const suppressUsage = `usage: tern suppress [--config FILE] [--json] [--timeout MS] COMMAND
  add [--scope S] [--detail TEXT] ADDRESS...      put addresses on the list (reason "manual")
  remove [--scope S] ADDRESS...                   take them off
  list [--scope S] [--address A] [--limit N] [--after KEY] [--all]
                                                  entries, a page at a time (--all: every page)
  import [--scope S] FILE                         one address a line, or CSV "address,scope" lines
                                                  ("-": standard input; # comments and blank lines
                                                  skipped; reason "import")
A scope is "global" (mail from every sender; the default) or a sender domain (mail from
that domain only). Addresses match without regard to case. Any node answers.
Exit status: 0 done, 1 refused, 2 bad usage or input, 69 no node answered.`;

export const runSuppress = (args: string[]): Promise<number> => suppressCommand(args, { out: (t) => console.log(t), err: (t) => console.error(t) });

class Usage extends Error {}

/** Runs one `tern suppress` command; resolves with the exit code. */
export const suppressCommand = async (args: string[], io: Output): Promise<number> => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      scope: { type: "string" },
      detail: { type: "string" },
      address: { type: "string" },
      limit: { type: "string" },
      after: { type: "string" },
      all: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals.length === 0) {
    io.out(suppressUsage);
    return values.help ? 0 : 2;
  }
  const [command, ...rest] = positionals;
  let requests: SuppressionAdminRequest[];
  try {
    requests = await requestsOf(command!, rest, values);
  } catch (error) {
    if (!(error instanceof Usage)) throw error;
    io.err(`tern: ${error.message}\n${suppressUsage}`);
    return 2;
  }
  const timeoutMs = timeoutOption(values.timeout, 30_000);
  if (timeoutMs === undefined) {
    io.err(`tern: ${badTimeout(values.timeout)}\n${suppressUsage}`);
    return 2;
  }
  const config = await loadConfig(values.config, process.env);
  const subjects = makeSubjects(config.cluster);
  const nc = await connectAsOperator(config, "tern-suppress");
  const ask = (request: SuppressionAdminRequest) =>
    Effect.runPromiseExit(callEndpoint(nc, subjects.suppressionAdmin, suppressionAdminEndpoint, request, { timeoutMs }).pipe(Effect.map((reply) => reply.value)));
  try {
    const totals = { changed: 0, unchanged: 0 };
    for (let request: SuppressionAdminRequest | undefined = requests.shift(); request !== undefined; request = requests.shift()) {
      const exit = await ask(request);
      if (Exit.isFailure(exit)) return failed(io, config.cluster, exit.cause);
      const reply = exit.value;
      if (reply._tag === "Listed") {
        for (const entry of reply.entries) io.out(values.json ? JSON.stringify(entry) : renderEntry(entry));
        // --all: the next page, until the last.
        if (values.all && reply.next !== undefined && request._tag === "List") requests.unshift({ ...request, after: reply.next });
        else if (!values.json) io.err(`tern: ${reply.total} entr${reply.total === 1 ? "y" : "ies"}${reply.next !== undefined ? `; more after ${reply.next} (--after, or --all)` : ""}`);
        continue;
      }
      totals.changed += reply.changed.length;
      totals.unchanged += reply.unchanged.length;
      if (values.json) io.out(JSON.stringify(reply));
    }
    if (command !== "list" && !values.json) io.out(summary(command!, totals));
    return 0;
  } finally {
    await nc.close();
  }
};

const summary = (command: string, { changed, unchanged }: { changed: number; unchanged: number }) =>
  command === "remove" ? `removed ${changed}, not on the list ${unchanged}` : `added ${changed}, already on the list ${unchanged}`;

const failed = (io: Output, cluster: string, cause: Cause.Cause<unknown>): number => {
  const error = Cause.findErrorOption(cause);
  const value = error._tag === "Some" ? (error.value as { _tag?: string; code?: string; message?: string; detail?: string }) : undefined;
  if (value?._tag === "SuppressionAdminError") {
    io.err(`tern: ${value.code}: ${value.message}`);
    return 1;
  }
  io.err(`tern: no node of cluster ${cluster} answered: ${value?.detail ?? value?.message ?? Cause.pretty(cause)}`);
  return 69; // EX_UNAVAILABLE
};

type Values = { scope?: string | undefined; detail?: string | undefined; address?: string | undefined; limit?: string | undefined; after?: string | undefined };

const scopeOf = (values: Values) => {
  const scope = values.scope ?? "global";
  if (normalScope(scope) === undefined) throw new Usage(`--scope ${scope}: expected "global" or a domain name`);
  return scope;
};

const isAddress = (text: string) => /^[^@\s<>,;]+@[^@\s<>,;]+$/.test(text);

const addressesOf = (rest: ReadonlyArray<string>) => {
  if (rest.length === 0) throw new Usage("name at least one address");
  const bad = rest.find((a) => !isAddress(a));
  if (bad !== undefined) throw new Usage(`${JSON.stringify(bad)} is not an address (local@domain)`);
  return rest;
};

const batches = <A>(items: ReadonlyArray<A>): A[][] => Array.from({ length: Math.ceil(items.length / MAX_BATCH) }, (_, n) => items.slice(n * MAX_BATCH, (n + 1) * MAX_BATCH));

const requestsOf = async (command: string, rest: ReadonlyArray<string>, values: Values): Promise<SuppressionAdminRequest[]> => {
  switch (command) {
    case "add": {
      const scope = scopeOf(values);
      return batches(addressesOf(rest)).map((addresses) => ({ _tag: "Add", scope, addresses, ...(values.detail !== undefined ? { detail: values.detail.slice(0, 200) } : {}) }));
    }
    case "remove": {
      const scope = scopeOf(values);
      return batches(addressesOf(rest)).map((addresses) => ({ _tag: "Remove", scope, addresses }));
    }
    case "list": {
      if (rest.length > 0) throw new Usage(`unexpected ${JSON.stringify(rest[0])}`);
      const limit = values.limit === undefined ? undefined : Number(values.limit);
      if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= MAX_PAGE)) throw new Usage(`--limit ${values.limit}: expected 1 to ${MAX_PAGE}`);
      if (values.address !== undefined && !isAddress(values.address)) throw new Usage(`--address ${values.address}: expected local@domain`);
      return [
        {
          _tag: "List",
          ...(values.scope !== undefined ? { scope: scopeOf(values) } : {}),
          ...(values.address !== undefined ? { address: values.address } : {}),
          ...(values.after !== undefined ? { after: values.after } : {}),
          ...(limit !== undefined ? { limit } : {}),
        },
      ];
    }
    case "import": {
      if (rest.length !== 1) throw new Usage("import reads one FILE (or - for standard input)");
      const text = rest[0] === "-" ? await readStdin() : await readFile(rest[0]!, "utf8").catch((error: Error) => Promise.reject(new Usage(`cannot read ${rest[0]}: ${error.message}`)));
      return batches(parseImport(text, scopeOf(values))).map((entries) => ({ _tag: "Import", entries }));
    }
    default:
      throw new Usage(`unknown command ${JSON.stringify(command)}`);
  }
};

const readStdin = async () => {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  return text;
};

const unquote = (field: string) => field.trim().replace(/^"(.*)"$/, "$1").trim();

/**
 * An import file: one address a line, or CSV lines "address,scope" (a scope left empty
 * takes `scope`). Blank lines and # comments are skipped, and so is a first line that is a
 * header (its first field no address). Any other bad line refuses the whole file, naming it.
 */
export const parseImport = (text: string, scope: string): Array<{ address: string; scope: string }> => {
  const entries: Array<{ address: string; scope: string }> = [];
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, n) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const [first = "", second = "", ...more] = line.split(",").map(unquote);
    if (!isAddress(first)) {
      if (entries.length === 0 && problems.length === 0 && !first.includes("@")) return; // a header
      return void problems.push(`line ${n + 1}: ${JSON.stringify(first)} is not an address`);
    }
    if (more.some((field) => field !== "")) return void problems.push(`line ${n + 1}: expected "address" or "address,scope"`);
    const lineScope = second === "" ? scope : second;
    if (normalScope(lineScope) === undefined) return void problems.push(`line ${n + 1}: scope ${JSON.stringify(lineScope)} is neither "global" nor a domain name`);
    entries.push({ address: first, scope: lineScope });
  });
  if (problems.length > 0) throw new Usage(`nothing imported:\n  ${problems.slice(0, 20).join("\n  ")}${problems.length > 20 ? `\n  … and ${problems.length - 20} more` : ""}`);
  if (entries.length === 0) throw new Usage("the file names no address");
  return entries;
};

const renderEntry = (entry: SuppressionRecord): string =>
  [
    entry.scope,
    entry.address,
    entry.reason,
    new Date(entry.at).toISOString(),
    ...(entry.msg !== undefined ? [`msg=${entry.msg}`] : []),
    ...(entry.node !== undefined ? [`node=${entry.node}`] : []),
    ...(entry.detail !== undefined ? [JSON.stringify(entry.detail)] : []),
  ].join(" ");
