// The one user store behind SMTP AUTH (submission), POP3 and IMAP logins and local
// delivery: who exists, where their mailbox lives, which addresses they may send as.
// Passwords are kept as scrypt hashes ("scrypt$N$r$p$salt$hash", base64 parts); a plain
// `password` in the config is accepted for development and hashed in memory at start.
import { randomBytes, scrypt as scryptCallback, timingSafeEqual } from "node:crypto";
import { localPartOf } from "../common/domains.ts";

export interface UserRecord {
  readonly address: string;
  readonly password?: string | undefined;
  readonly passwordHash?: string | undefined;
  readonly home?: string | undefined;
  readonly aliases?: ReadonlyArray<string> | undefined;
}

export interface UserStore {
  readonly exists: (address: string) => boolean;
  /** The user address a login name stands for (`alice` → `alice@local.test`), if any: the key failed logins are counted by. */
  readonly accountOf: (login: string) => string | undefined;
  /** Resolves to the user's address when the password is right, else undefined. A login is a full address, or a local part only one user has. */
  readonly verify: (login: string, password: string) => Promise<string | undefined>;
  /** May `user` use `address` as its MAIL FROM? Its own address or one of its aliases. */
  readonly mayUseSender: (user: string, address: string) => boolean;
  /** Is `address` some user's own address or one of its aliases (a sender the API may use)? */
  readonly isUserAddress: (address: string) => boolean;
  readonly homeOf: (address: string) => string | undefined;
}

const SCRYPT = { N: 16384, r: 8, p: 1, keyLength: 32 };

const scrypt = (password: string, salt: Buffer, N: number, r: number, p: number, keyLength: number) =>
  new Promise<Buffer>((resolve, reject) =>
    scryptCallback(password, salt, keyLength, { N, r, p, maxmem: 256 * N * r }, (error, key) => (error ? reject(error) : resolve(key))),
  );

export const hashPassword = async (password: string): Promise<string> => {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, SCRYPT.N, SCRYPT.r, SCRYPT.p, SCRYPT.keyLength);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString("base64")}$${key.toString("base64")}`;
};

export const isPasswordHash = (text: string): boolean => /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/.test(text);

export const verifyPassword = async (password: string, stored: string): Promise<boolean> => {
  if (!isPasswordHash(stored)) return false;
  const [, n, r, p, salt, hash] = stored.split("$");
  const expected = Buffer.from(hash!, "base64");
  const actual = await scrypt(password, Buffer.from(salt!, "base64"), Number(n), Number(r), Number(p), expected.length);
  return timingSafeEqual(actual, expected);
};

/** A hash to verify against when the user does not exist, so timing does not reveal it. */
let decoy: Promise<string> | undefined;

export const makeUserStore = async (records: ReadonlyArray<UserRecord>): Promise<UserStore> => {
  const users = new Map<string, { hash: string; home?: string | undefined; aliases: Set<string> }>();
  for (const record of records) {
    const address = record.address.toLowerCase();
    const hash = record.passwordHash ?? (await hashPassword(record.password ?? randomBytes(16).toString("hex")));
    users.set(address, { hash, home: record.home, aliases: new Set((record.aliases ?? []).map((a) => a.toLowerCase())) });
  }
  const aliases = new Set([...users.values()].flatMap((user) => [...user.aliases]));
  const canonical = (login: string) => {
    const lower = login.toLowerCase();
    if (lower.includes("@")) return users.has(lower) ? lower : undefined;
    const matches = [...users.keys()].filter((address) => localPartOf(address) === lower);
    return matches.length === 1 ? matches[0] : undefined;
  };
  return {
    exists: (address) => users.has(address.toLowerCase()),
    accountOf: canonical,
    verify: async (login, password) => {
      const address = canonical(login);
      const user = address === undefined ? undefined : users.get(address);
      if (!user) {
        await verifyPassword(password, await (decoy ??= hashPassword("decoy")));
        return undefined;
      }
      return (await verifyPassword(password, user.hash)) ? address : undefined;
    },
    mayUseSender: (user, address) => {
      const lower = address.toLowerCase();
      return lower === user.toLowerCase() || (users.get(user.toLowerCase())?.aliases.has(lower) ?? false);
    },
    isUserAddress: (address) => users.has(address.toLowerCase()) || aliases.has(address.toLowerCase()),
    homeOf: (address) => users.get(address.toLowerCase())?.home,
  };
};

/**
 * A user store whose users can be replaced while the node runs (SIGHUP reads the config
 * again): every lookup goes to the store of the moment, so a session that started before a
 * reload answers its next command from the new one.
 */
export const reloadableUserStore = (initial: UserStore): { readonly store: UserStore; readonly replace: (next: UserStore) => void } => {
  let current = initial;
  return {
    store: {
      exists: (address) => current.exists(address),
      accountOf: (login) => current.accountOf(login),
      verify: (login, password) => current.verify(login, password),
      mayUseSender: (user, address) => current.mayUseSender(user, address),
      isUserAddress: (address) => current.isUserAddress(address),
      homeOf: (address) => current.homeOf(address),
    },
    replace: (next) => {
      current = next;
    },
  };
};
