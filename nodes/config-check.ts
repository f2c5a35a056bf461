// What a config must also get right beyond its schema: values that contradict each other
// (checked whenever a config is parsed), and what only the machine can tell (files that
// must be readable, ports that must be free), which `tern config check` looks at before a
// node is started with the config. Every problem names its path.
import { access, constants } from "node:fs/promises";
import { createServer, isIP } from "node:net";
import type { NatsAuth, NatsTls, SecretSource } from "../cluster/nats-auth.ts";

/** The parts of a node's config these checks read (nodes/config.ts's NodeConfig has them; named here so the two modules do not import each other). */
export interface CheckedConfig {
  readonly hostname: string;
  readonly listen: { readonly host: string } & Readonly<Record<string, string | number>>;
  /** Where the HTTP endpoint listens (`http.listen`, else listen.host and listen.http). */
  readonly http: { readonly host: string; readonly port: number };
  readonly tls: { readonly certFile?: string | undefined; readonly keyFile?: string | undefined };
  readonly nats: { readonly tls?: NatsTls | undefined; readonly auth: NatsAuth };
  readonly delivery: { readonly retryBaseMs: number; readonly retryMaxMs: number; readonly bounceRulesFile: string | undefined; readonly throttleRulesFile: string | undefined };
  readonly dkim: { readonly domains: Readonly<Record<string, ReadonlyArray<{ readonly keyFile: string }>>> };
}

const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

const isHostName = (name: string) => name.length <= 253 && HOST_NAME.test(name);

/** A certificate needs its key and a key its certificate. */
const pairProblem = (path: string, tls: { readonly certFile?: string | undefined; readonly keyFile?: string | undefined }): string | undefined => {
  if (tls.certFile !== undefined && tls.keyFile === undefined) return `${path}.certFile is set without ${path}.keyFile`;
  if (tls.keyFile !== undefined && tls.certFile === undefined) return `${path}.keyFile is set without ${path}.certFile`;
  return undefined;
};

/** Values that contradict each other or cannot work, whatever the machine. */
export const configProblems = (config: CheckedConfig): string[] => {
  const problems: Array<string | undefined> = [
    pairProblem("tls", config.tls),
    pairProblem("nats.tls", config.nats.tls ?? {}),
    isHostName(config.hostname) ? undefined : `hostname = ${JSON.stringify(config.hostname)}: expected a host name (it is said in greetings and Received headers)`,
    isIP(config.listen.host) !== 0 || isHostName(config.listen.host)
      ? undefined
      : `listen.host = ${JSON.stringify(config.listen.host)}: expected an IP address or a host name`,
    isIP(config.http.host) !== 0 || isHostName(config.http.host)
      ? undefined
      : `http.listen = ${JSON.stringify(`${config.http.host}:${config.http.port}`)}: expected an IP address or a host name`,
    config.delivery.retryBaseMs <= config.delivery.retryMaxMs
      ? undefined
      : `delivery.retryBaseMs (${config.delivery.retryBaseMs}) is more than delivery.retryMaxMs (${config.delivery.retryMaxMs})`,
  ];
  return problems.filter((problem): problem is string => problem !== undefined);
};

/** Every file the config names that the node reads, with its path in the config. */
const filesOf = (config: CheckedConfig): Array<{ readonly path: string; readonly file: string }> => {
  const files: Array<{ path: string; file: string | undefined }> = [
    { path: "tls.certFile", file: config.tls.certFile },
    { path: "tls.keyFile", file: config.tls.keyFile },
    { path: "nats.tls.caFile", file: config.nats.tls?.caFile },
    { path: "nats.tls.certFile", file: config.nats.tls?.certFile },
    { path: "nats.tls.keyFile", file: config.nats.tls?.keyFile },
    { path: "delivery.bounceRulesFile", file: config.delivery.bounceRulesFile },
    { path: "delivery.throttleRulesFile", file: config.delivery.throttleRulesFile },
    ...natsSecretFiles(config),
    ...Object.entries(config.dkim.domains).flatMap(([domain, keys]) => keys.map((key, n) => ({ path: `dkim.domains[${JSON.stringify(domain)}][${n}].keyFile`, file: key.keyFile }))),
  ];
  return files.filter((entry): entry is { path: string; file: string } => entry.file !== undefined);
};

const fileOf = (source: SecretSource): string | undefined => ("file" in source ? source.file : undefined);

const natsSecretFiles = (config: CheckedConfig): Array<{ path: string; file: string | undefined }> => {
  const auth = config.nats.auth;
  switch (auth.kind) {
    case "user":
      return [{ path: "nats.passwordFile", file: fileOf(auth.password) }];
    case "token":
      return [{ path: "nats.tokenFile", file: fileOf(auth.token) }];
    case "nkey":
      return [{ path: "nats.nkeySeedFile", file: fileOf(auth.seed) }];
    case "creds":
      return [{ path: "nats.credsFile", file: auth.file }];
    default:
      return [];
  }
};

const portFree = (host: string | undefined, port: number): Promise<string | undefined> =>
  new Promise((resolve) => {
    const server = createServer();
    server.once("error", (error: NodeJS.ErrnoException) => resolve(error.code === "EADDRINUSE" ? "in use" : (error.code ?? String(error))));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });

/** What only the machine can tell: files that cannot be read, ports that cannot be listened on. */
export const machineProblems = async (config: CheckedConfig): Promise<string[]> => {
  const problems: string[] = [];
  for (const { path, file } of filesOf(config)) {
    try {
      await access(file, constants.R_OK);
    } catch (error) {
      problems.push(`${path} = ${JSON.stringify(file)}: cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
  }
  for (const [name, port] of Object.entries(config.listen)) {
    if (name === "host" || name === "http" || typeof port !== "number" || port === 0) continue;
    const problem = await portFree(config.listen.host, port);
    if (problem !== undefined) problems.push(`listen.${name} = ${port}: cannot listen on ${config.listen.host} port ${port} (${problem})`);
  }
  const http = config.http;
  if (http.port !== 0) {
    const own = http.host !== config.listen.host || http.port !== config.listen.http;
    const problem = await portFree(http.host, http.port);
    const path = own ? `http.listen = ${JSON.stringify(`${http.host}:${http.port}`)}` : `listen.http = ${http.port}`;
    if (problem !== undefined) problems.push(`${path}: cannot listen on ${http.host} port ${http.port} (${problem})`);
  }
  return problems;
};
