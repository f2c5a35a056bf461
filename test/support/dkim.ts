// DKIM for tests: keys made here (node:crypto), the TXT records that publish them (served
// by dnsmasq, test/support/dnsmasq.ts), and an independent verifier: Debian's dkimpy
// (python3-dkim), which looks each key up over real DNS at the given dnsmasq.
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

/** The system interpreter: python3 on PATH may be a pyenv shim without Debian's packages. */
const PYTHON = "/usr/bin/python3";

export interface TestKey {
  readonly selector: string;
  readonly algorithm: "rsa-sha256" | "ed25519-sha256";
  readonly keyFile: string;
  /** The TXT record's text (v=DKIM1; k=…; p=…). */
  readonly record: string;
}

/** Makes a key pair, writes the private key (PEM) into `dir`, and returns its public record. */
export const makeKey = async (dir: string, selector: string, algorithm: TestKey["algorithm"]): Promise<TestKey> => {
  const keyFile = join(dir, `${selector}.pem`);
  if (algorithm === "rsa-sha256") {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    await writeFile(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
    return { selector, algorithm, keyFile, record: `v=DKIM1; k=rsa; p=${publicKey.export({ type: "spki", format: "der" }).toString("base64")}` };
  }
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  await writeFile(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
  // RFC 8463 §4.2: the p= of an Ed25519 key is the bare 32-byte public key, not its SPKI.
  const raw = publicKey.export({ type: "spki", format: "der" }).subarray(-32);
  return { selector, algorithm, keyFile, record: `v=DKIM1; k=ed25519; p=${raw.toString("base64")}` };
};

/** The dnsmasq TXT entry publishing `key` for `domain`, split into character-strings of at most 255 octets. */
export const txtRecord = (domain: string, key: TestKey) => ({
  name: `${key.selector}._domainkey.${domain}`,
  strings: key.record.match(/.{1,255}/g)!,
});

export interface SignatureCheck {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: string;
  readonly ok: boolean;
}

const VERIFY = `
import json, sys
import dkim, dns.message, dns.query, dns.rdatatype
host, port = sys.argv[1], int(sys.argv[2])
def lookup(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    answer = dns.query.udp(query, host, port=port, timeout=timeout)
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            return b"".join(list(rrset.items)[0].strings)
    return None
message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
signatures = [value for name, value in d.headers if name.lower() == b"dkim-signature"]
out = []
for i, value in enumerate(signatures):
    tags = dkim.util.parse_tag_value(b"".join(value.split()))
    try:
        ok = dkim.DKIM(message).verify(idx=i, dnsfunc=lookup)
    except dkim.DKIMException:
        ok = False
    out.append({"domain": tags[b"d"].decode(), "selector": tags[b"s"].decode(), "algorithm": tags[b"a"].decode(), "ok": bool(ok)})
print(json.dumps(out))
`;

/** Every DKIM-Signature of `message`, in order, with dkimpy's verdict on it. */
export const verifyDkim = (message: Uint8Array, dns: { readonly host: string; readonly port: number }): Promise<ReadonlyArray<SignatureCheck>> =>
  new Promise((resolve, reject) => {
    const child = execFile(PYTHON, ["-c", VERIFY, dns.host, String(dns.port)], { timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`dkimpy failed: ${stderr || error.message}`));
      resolve(JSON.parse(stdout) as SignatureCheck[]);
    });
    child.stdin!.end(Buffer.from(message));
  });
