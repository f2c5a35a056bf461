// TLS credentials for STARTTLS (SMTP, POP3) and the implicit-TLS listeners: the
// configured certificate and key, or, when none is configured, a self-signed
// development certificate generated once under the data dir and reused afterwards.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { generate } from "selfsigned";
import type { Log } from "../protocol/log.ts";

export interface TlsCredentials {
  readonly key: Buffer;
  readonly cert: Buffer;
  /** True when Tern generated the certificate (clients will not trust it). */
  readonly selfSigned: boolean;
}

export interface TlsConfig {
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

const readPair = async (certFile: string, keyFile: string) => ({
  cert: await readFile(certFile),
  key: await readFile(keyFile),
});

export const loadTlsCredentials = async (
  tls: TlsConfig,
  dataDir: string,
  hostname: string,
  log: Log,
): Promise<TlsCredentials> => {
  if (tls.certFile && tls.keyFile) return { ...(await readPair(tls.certFile, tls.keyFile)), selfSigned: false };
  const dir = join(dataDir, "tls");
  const certFile = join(dir, "dev-cert.pem");
  const keyFile = join(dir, "dev-key.pem");
  try {
    const pair = await readPair(certFile, keyFile);
    log("tls.dev-certificate.reused", { certFile });
    return { ...pair, selfSigned: true };
  } catch {
    // none yet: generate below
  }
  const notAfter = new Date();
  notAfter.setFullYear(notAfter.getFullYear() + 2);
  const pems = await generate([{ name: "commonName", value: hostname }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    notAfterDate: notAfter,
    extensions: [{ name: "subjectAltName", altNames: [{ type: 2, value: hostname }, { type: 2, value: "localhost" }, { type: 7, ip: "127.0.0.1" }] }],
  });
  await mkdir(dir, { recursive: true });
  await writeFile(keyFile, pems.private, { mode: 0o600 });
  await writeFile(certFile, pems.cert);
  log("tls.dev-certificate.generated", { certFile, level: "warn", text: "self-signed development certificate; configure tls.certFile and tls.keyFile for production" });
  return { cert: Buffer.from(pems.cert), key: Buffer.from(pems.private), selfSigned: true };
};
