// How a Tern process proves who it is to NATS, and how it protects the link. Secrets are
// never part of the configuration itself: the config names a file or an environment
// variable, and the secret is read only when connecting, so a logged or printed config
// never carries one.
import { readFile } from "node:fs/promises";
import {
  credsAuthenticator,
  nkeyAuthenticator,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
  type ConnectionOptions,
} from "@nats-io/transport-node";

/** Where a secret is read from when connecting. */
export type SecretSource = { readonly file: string } | { readonly env: string };

export type NatsAuth =
  | { readonly kind: "none" }
  | { readonly kind: "user"; readonly user: string; readonly password: SecretSource }
  | { readonly kind: "token"; readonly token: SecretSource }
  | { readonly kind: "nkey"; readonly seed: SecretSource }
  /** A creds file (JWT and nkey seed) as written by `nsc` for the decentralised JWT model. */
  | { readonly kind: "creds"; readonly file: string };

/** TLS to the NATS server: CA to verify it, and a client certificate when it asks for one. */
export interface NatsTls {
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

export interface NatsSecurity {
  readonly auth: NatsAuth;
  /** Unset: plain TCP (only accepted on loopback or a link declared trusted). */
  readonly tls: NatsTls | undefined;
}

export class NatsCredentialsUnreadable extends Error {
  override readonly name = "NatsCredentialsUnreadable";
}

const describe = (source: SecretSource) => ("file" in source ? `file ${source.file}` : `environment variable ${source.env}`);

const readSecret = async (source: SecretSource, env: NodeJS.ProcessEnv): Promise<string> => {
  const value = "file" in source
    ? await readFile(source.file, "utf8").catch((error: Error) => {
        throw new NatsCredentialsUnreadable(`cannot read the NATS secret from ${describe(source)}: ${error.message}`);
      })
    : env[source.env];
  // A trailing newline from `echo secret > file` is not part of the secret.
  const secret = value?.replace(/\r?\n$/, "");
  if (!secret) throw new NatsCredentialsUnreadable(`the NATS secret in ${describe(source)} is empty`);
  return secret;
};

/** The connect options that carry `security`: an authenticator and TLS settings. */
export const securityOptions = async (security: NatsSecurity, env: NodeJS.ProcessEnv = process.env): Promise<Partial<ConnectionOptions>> => {
  const tls = security.tls ? { tls: { ...security.tls } } : {};
  const auth = security.auth;
  switch (auth.kind) {
    case "none":
      return tls;
    case "user":
      return { ...tls, authenticator: usernamePasswordAuthenticator(auth.user, await readSecret(auth.password, env)) };
    case "token":
      return { ...tls, authenticator: tokenAuthenticator(await readSecret(auth.token, env)) };
    case "nkey":
      return { ...tls, authenticator: nkeyAuthenticator(new TextEncoder().encode(await readSecret(auth.seed, env))) };
    case "creds": {
      const creds = await readFile(auth.file).catch((error: Error) => {
        throw new NatsCredentialsUnreadable(`cannot read the NATS creds file ${auth.file}: ${error.message}`);
      });
      return { ...tls, authenticator: credsAuthenticator(new Uint8Array(creds)) };
    }
  }
};

const isLoopbackHost = (host: string) => host === "localhost" || host.startsWith("127.") || host === "[::1]" || host === "::1";

/**
 * The servers that would carry mail in clear text: neither loopback nor TLS. Bodies cross
 * NATS between nodes (mail for a mailbox held by another node), so such a link must be
 * TLS, or declared trusted (a private network, a VPN) by the operator.
 */
export const plaintextServers = (servers: ReadonlyArray<string>, tls: NatsTls | undefined): string[] =>
  tls
    ? []
    : servers.filter((server) => {
        const url = new URL(server.includes("://") ? server : `nats://${server}`);
        return url.protocol !== "tls:" && !isLoopbackHost(url.hostname);
      });
