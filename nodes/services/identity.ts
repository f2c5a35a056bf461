// Who the node's users are and how it proves who it is: the user store (passwords,
// aliases, home nodes), the failed-login record of their accounts, the TLS
// credentials of its listeners, and the DKIM keys it signs its senders' mail with.
import { Context, Effect, Layer } from "effect";
import { defaultAccountDelay, makeLoginAccounts, type LoginAccounts as LoginAccountsShape } from "../../actors/users/login-throttle.ts";
import { makeUserStore, type UserStore } from "../../actors/users/store.ts";
import { loadSigningKeys } from "../../actors/dkim/keys.ts";
import { makeDkimSigner, type DkimSigner } from "../../actors/dkim/signer.ts";
import { ConfigError } from "../config.ts";
import { loadTlsCredentials, type TlsCredentials } from "../tls.ts";
import { Config, Log, starting } from "./core.ts";

export class Users extends Context.Service<Users, UserStore>()("tern/Users") {
  static readonly layer = Layer.effect(
    Users,
    Effect.gen(function* () {
      const config = yield* Config;
      return yield* starting("users", () => makeUserStore(config.users));
    }),
  );
}

/** Failed logins per account and known-good IPs, one record for SMTP AUTH and POP3 together. */
export class LoginAccounts extends Context.Service<LoginAccounts, LoginAccountsShape>()("tern/LoginAccounts") {
  static readonly layer = Layer.effect(
    LoginAccounts,
    Effect.gen(function* () {
      const { logins } = yield* Config;
      const users = yield* Users;
      return yield* makeLoginAccounts(users.accountOf, {
        ...defaultAccountDelay,
        afterFailures: logins.accountDelayAfterFailures,
        delayMs: logins.accountDelayMs,
        maxDelayMs: logins.accountMaxDelayMs,
        windowMs: logins.accountWindowMs,
      });
    }),
  );
}

export class Tls extends Context.Service<Tls, TlsCredentials>()("tern/Tls") {
  static readonly layer = Layer.effect(
    Tls,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      return yield* starting("tls", () => loadTlsCredentials(config.tls, config.dataDir, config.hostname, log));
    }),
  );
}

/**
 * The DKIM signer, or undefined when no domain has keys. Keys are read and checked here, at
 * start: a missing or unusable key file stops the node (ConfigError). Only domains and
 * selectors are logged, never a key.
 */
export class Dkim extends Context.Service<Dkim, DkimSigner | undefined>()("tern/Dkim") {
  static readonly layer = Layer.effect(
    Dkim,
    Effect.gen(function* () {
      const { dkim } = yield* Config;
      const log = yield* Log;
      if (Object.keys(dkim.domains).length === 0) return undefined;
      const keys = yield* loadSigningKeys(dkim).pipe(Effect.mapError((error) => new ConfigError(`invalid config: ${error.message}`)));
      log("dkim.keys.loaded", { domains: Object.fromEntries([...keys].map(([domain, list]) => [domain, list.map((k) => `${k.selector} (${k.algorithm})`)])) });
      return makeDkimSigner(keys, { headers: dkim.headers });
    }),
  );
}
