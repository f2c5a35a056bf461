// Puts a message into a real spool as a session would: accepted at the Clock's time (so
// TestClock decides its age), one queue entry per recipient domain.
import { Clock, Effect } from "effect";
import { newMessageId } from "../../actors/queue/entry.ts";
import type { Spool } from "../../actors/queue/spool.ts";

export const acceptMessage = (spool: Spool, sender: string, recipients: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis;
    const id = newMessageId(now);
    const body = spool.openBody(id);
    body.append(Buffer.from(`From: ${sender}\r\nSubject: ${id}\r\n\r\nbody\r\n`));
    const byDomain = new Map<string, string[]>();
    for (const r of recipients) byDomain.set(r.split("@")[1]!, [...(byDomain.get(r.split("@")[1]!) ?? []), r]);
    const routes = [...byDomain].map(([domain, rcpts]) => ({ route: { kind: "remote" as const, domain }, recipients: rcpts }));
    return yield* spool.accept({ id, sender, receivedAt: now, body, routes });
  });
