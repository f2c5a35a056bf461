// Who the node's users are and how it proves who it is: the user store (passwords,
// aliases, home nodes) and the TLS credentials of its listeners.
import { Context, Effect, Layer } from "effect";
import { makeUserStore, type UserStore } from "../../actors/users/store.ts";
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
