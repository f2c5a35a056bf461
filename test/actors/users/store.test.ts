import { test } from "node:test";
import assert from "node:assert/strict";
import { scryptSync } from "node:crypto";
import { hashPassword, isPasswordHash, makeUserStore, verifyPassword } from "../../../actors/users/store.ts";

const store = async () =>
  makeUserStore([
    { address: "alice@a.test", passwordHash: await hashPassword("alice-secret"), home: "n2", aliases: ["Sales@A.test", "ali@b.test"] },
    { address: "bob@a.test", password: "bob-secret" },
    { address: "bob@b.test", password: "other-bob" },
    { address: "Carol@B.test", password: "carol-secret" },
  ]);

test("users are looked up by address in any case", async () => {
  const users = await store();
  assert.equal(users.exists("alice@a.test"), true);
  assert.equal(users.exists("ALICE@A.TEST"), true);
  assert.equal(users.exists("carol@b.test"), true, "configured as Carol@B.test");
  assert.equal(users.exists("alice@b.test"), false);
});

test("a login is a full address or a local part that only one user has", async () => {
  const users = await store();
  assert.equal(await users.verify("Alice@A.test", "alice-secret"), "alice@a.test");
  assert.equal(await users.verify("alice", "alice-secret"), "alice@a.test");
  assert.equal(await users.verify("CAROL", "carol-secret"), "carol@b.test");
  assert.equal(await users.verify("bob", "bob-secret"), undefined, "two users are called bob");
  assert.equal(await users.verify("bob@b.test", "other-bob"), "bob@b.test");
});

test("a login name resolves to its user's address, the key failed logins are counted by", async () => {
  const users = await store();
  assert.equal(users.accountOf("alice"), "alice@a.test");
  assert.equal(users.accountOf("ALICE@a.test"), "alice@a.test");
  assert.equal(users.accountOf("Carol"), "carol@b.test");
  assert.equal(users.accountOf("bob"), undefined, "ambiguous: two users are called bob");
  assert.equal(users.accountOf("mallory"), undefined);
});

test("unknown users do not exist, have no home and cannot log in", async () => {
  const users = await store();
  assert.equal(users.exists("mallory@a.test"), false);
  assert.equal(users.homeOf("mallory@a.test"), undefined);
  assert.equal(await users.verify("mallory@a.test", "anything"), undefined);
  assert.equal(users.mayUseSender("mallory@a.test", "alice@a.test"), false);
});

test("a user's home node is the configured one, or unset", async () => {
  const users = await store();
  assert.equal(users.homeOf("ALICE@a.test"), "n2");
  assert.equal(users.homeOf("bob@a.test"), undefined);
});

test("an authenticated user may send as itself and its aliases only", async () => {
  const users = await store();
  assert.equal(users.mayUseSender("alice@a.test", "alice@a.test"), true);
  assert.equal(users.mayUseSender("alice@a.test", "sales@a.test"), true);
  assert.equal(users.mayUseSender("Alice@A.test", "ALI@b.test"), true);
  assert.equal(users.mayUseSender("alice@a.test", "bob@a.test"), false);
  assert.equal(users.mayUseSender("bob@a.test", "sales@a.test"), false);
});

test("verify accepts the right password (configured as a hash or in plain) and names the user", async () => {
  const users = await store();
  assert.equal(await users.verify("alice@a.test", "alice-secret"), "alice@a.test");
  assert.equal(await users.verify("bob@a.test", "bob-secret"), "bob@a.test");
  assert.equal(await users.verify("bob@b.test", "other-bob"), "bob@b.test");
  assert.equal(await users.verify("alice@a.test", "Alice-secret"), undefined);
  assert.equal(await users.verify("bob@a.test", "other-bob"), undefined, "another user's password");
});

test("password hashes are scrypt$N$r$p$salt$hash, salted, and verified with the parameters they carry", async () => {
  const hash = await hashPassword("pw");
  assert.equal(isPasswordHash(hash), true);
  assert.match(hash, /^scrypt\$16384\$8\$1\$/);
  assert.notEqual(await hashPassword("pw"), hash, "a fresh salt each time");
  assert.equal(await verifyPassword("pw", hash), true);
  assert.equal(await verifyPassword("pw2", hash), false);

  // A hash written with other parameters (here N=1024, r=4) still verifies.
  const salt = Buffer.from("0123456789abcdef");
  const key = scryptSync("pw", salt, 32, { N: 1024, r: 4, p: 1 });
  const other = `scrypt$1024$4$1$${salt.toString("base64")}$${key.toString("base64")}`;
  assert.equal(await verifyPassword("pw", other), true);
  assert.equal(await verifyPassword("wrong", other), false);
});

test("anything that is not an scrypt hash never verifies", async () => {
  for (const stored of ["pw", "md5$x", "scrypt$16384$8$1$salt", ""]) {
    assert.equal(isPasswordHash(stored), false, stored);
    assert.equal(await verifyPassword("pw", stored), false, stored);
  }
});

test("a user address is any user's own address or alias, in any case", async () => {
  const users = await store();
  assert.equal(users.isUserAddress("ALICE@a.test"), true);
  assert.equal(users.isUserAddress("sales@A.test"), true);
  assert.equal(users.isUserAddress("ali@b.test"), true);
  assert.equal(users.isUserAddress("nobody@a.test"), false);
});
