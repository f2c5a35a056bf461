// Who the node's users are and how it proves who it is: the user store (passwords,
// aliases, home nodes), the failed-login record of their accounts, the TLS
// credentials of its listeners, and the DKIM keys it signs its senders' mail with.
import { Context, Effect, Layer } from "effect";
import { defaultAccountDelay, makeLoginAccounts, type LoginAccounts as LoginAccountsShape } from "../../actors/users/login-throttle.ts";
import { makeUserStore, reloadableUserStore, type UserStore } from "../../actors/users/store.ts";
import { loadSigningKeys } from "../../actors/dkim/keys.ts";
import { makeDkimSigner, type DkimSigner } from "../../actors/dkim/signer.ts";
import { ConfigError, loadConfig } from "../config.ts";
import { loadTlsCredentials, type TlsCredentials } from "../tls.ts";
import { Config, Log, starting } from "./core.ts";

/**
 * The user store. On SIGHUP the node reads its config file again and, when the file is
 * valid, replaces its users (passwords, aliases, homes) without a restart; a file it would
 * refuse at start changes nothing and is logged. Other settings need a restart.
 */
export class Users extends Context.Service<Users, UserStore>()("tern/Users") {
  static readonly layer = Layer.effect(
    Users,
    Effect.gen(function* () {
      const config = yield* Config;
      const log = yield* Log;
      const users = reloadableUserStore(yield* starting("users", () => makeUserStore(config.users)));
      const file = config.configFile;
      if (file === undefined) return users.store;
      // A signal handler is an edge of the program: plain promises, nothing to interrupt.
      const reload = () =>
        void loadConfig(file, process.env)
          .then(async (next) => {
            users.replace(await makeUserStore(next.users));
            log("config.reloaded", { file, users: next.users.length });
          })
          .catch((error: unknown) => log("config.reload.failed", { level: "warn", file, error: error instanceof Error ? error.message : String(error) }));
      yield* Effect.acquireRelease(
        Effect.sync(() => process.on("SIGHUP", reload)),
        () => Effect.sync(() => process.off("SIGHUP", reload)),
      );
      return users.store;
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
