// One login attempt by Python's own clients (smtplib, poplib, imaplib) from a chosen loopback
// source address, so tests can spread attempts over "IPs": the reply and how long the
// password step took.
import assert from "node:assert/strict";
import { run } from "./tern-node.ts";

export interface LoginAttempt {
  readonly reply: string;
  readonly ms: number;
}

const SMTP_AUTH = `
import smtplib, ssl, sys, time, json
port, source, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(source, 0))
s.starttls(context=ssl._create_unverified_context())
s.ehlo()
s.user, s.password = user, password
started = time.monotonic()
try:
    code, text = s.auth("PLAIN", s.auth_plain)  # one AUTH command per attempt (login() would try several)
except smtplib.SMTPResponseException as e:
    code, text = e.smtp_code, e.smtp_error
print(json.dumps({"reply": f"{code} {text.decode()}", "ms": (time.monotonic() - started) * 1000}))
s.close()`;

const POP3_LOGIN = `
import poplib, socket, sys, time, json
port, source, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class FromSource(poplib.POP3):  # poplib has no source_address of its own
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))
p = FromSource("127.0.0.1", port, timeout=20)
p.user(user)
started = time.monotonic()
try:
    reply = p.pass_(password).decode()
    p.quit()
except poplib.error_proto as e:
    reply = e.args[0].decode()
print(json.dumps({"reply": reply, "ms": (time.monotonic() - started) * 1000}))`;

const IMAP_LOGIN = `
import imaplib, socket, sys, time, json
port, source, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class FromSource(imaplib.IMAP4):  # imaplib has no source_address of its own
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))
m = FromSource("127.0.0.1", port, timeout=20)
started = time.monotonic()
try:
    reply = "OK " + m.login(user, password)[1][0].decode()
    m.logout()
except imaplib.IMAP4.error as e:
    reply = "NO " + str(e)
print(json.dumps({"reply": reply, "ms": (time.monotonic() - started) * 1000}))`;

const attempt = async (script: string, port: number, user: string, password: string, source: string): Promise<LoginAttempt> => {
  const result = await run("python3", ["-c", script, String(port), source, user, password]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as LoginAttempt;
};

/** One SMTP AUTH PLAIN attempt after STARTTLS on `port`, from `source`. */
export const smtpAuthFrom = (port: number, user: string, password: string, source: string) => attempt(SMTP_AUTH, port, user, password, source);

/** One POP3 USER/PASS attempt on `port`, from `source`; the PASS reply. */
export const popLoginFrom = (port: number, user: string, password: string, source: string) => attempt(POP3_LOGIN, port, user, password, source);

/** One IMAP LOGIN attempt on `port`, from `source`: "OK …" or "NO …". */
export const imapLoginFrom = (port: number, user: string, password: string, source: string) => attempt(IMAP_LOGIN, port, user, password, source);
