// Events per key over a sliding window: the message rate per client IP, failed logins
// per IP, per (account, IP) and per account.
//
// Each key keeps its counts in 10 sub-buckets of the window: O(1) per event and a few
// numbers per key, however busy the key (one IP may send 100k messages a minute). Keys
// are held in least-recently-touched order and the oldest is dropped beyond `maxKeys`,
// so a spray of names or addresses cannot grow memory without bound.

const BUCKETS = 10;

interface Buckets {
  /** Index (time / bucket width) of counts[0], the newest sub-bucket. */
  bucket: number;
  counts: number[];
}

export class SlidingCounter {
  private readonly keys = new Map<string, Buckets>();

  constructor(
    private readonly windowMs: number,
    private readonly maxKeys: number = Infinity,
  ) {}

  private bucketOf(now: number) {
    return Math.floor((now * BUCKETS) / this.windowMs);
  }

  /** Drops sub-buckets that left the window, and the key when nothing is left. */
  private advance(key: string, now: number): Buckets | undefined {
    const entry = this.keys.get(key);
    if (!entry) return undefined;
    const current = this.bucketOf(now);
    const shift = Math.min(current - entry.bucket, BUCKETS);
    for (let i = 0; i < shift; i++) {
      entry.counts.pop();
      entry.counts.unshift(0);
    }
    entry.bucket = current;
    if (entry.counts.every((c) => c === 0)) {
      this.keys.delete(key);
      return undefined;
    }
    return entry;
  }

  count(key: string, now: number): number {
    return this.advance(key, now)?.counts.reduce((a, b) => a + b, 0) ?? 0;
  }

  add(key: string, now: number): void {
    const entry = this.advance(key, now) ?? { bucket: this.bucketOf(now), counts: new Array<number>(BUCKETS).fill(0) };
    entry.counts[0]!++;
    // Re-inserted so the Map's order stays least recently touched first.
    this.keys.delete(key);
    this.keys.set(key, entry);
    if (this.keys.size > this.maxKeys) this.keys.delete(this.keys.keys().next().value as string);
  }

  /**
   * Takes back one event added at `at` (a login counted as failed when it was admitted
   * turned out right). Nothing happens if that event has already left the window.
   */
  remove(key: string, at: number, now: number): void {
    const entry = this.advance(key, now);
    if (!entry) return;
    const index = entry.bucket - this.bucketOf(at);
    if (index < 0 || index >= BUCKETS || entry.counts[index] === 0) return;
    entry.counts[index]!--;
    if (entry.counts.every((c) => c === 0)) this.keys.delete(key);
  }

  /** Forgets the key's events (a successful login clears its pair's failures). */
  clear(key: string): void {
    this.keys.delete(key);
  }

  /** Forgets keys with no recent events (called now and then so memory stays small). */
  sweep(now: number): void {
    for (const key of [...this.keys.keys()]) this.advance(key, now);
  }
}
