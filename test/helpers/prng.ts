/**
 * The tests' one seeded PRNG (Marsaglia xorshift32): property and fuzz tests print their seed,
 * and KVMCHAN_TEST_SEED replays it (docs/testing.md, "Tiers").
 */
export class Prng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + (this.next() % (hi - lo + 1));
  }
  /** Uniform integer in [0, n) for n ≤ 2^32 (multiplicative: no modulo bias). */
  below(n: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from empty list');
    return items[this.next() % items.length]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

export function seedFromEnv(fallback: number): number {
  const s = process.env['KVMCHAN_TEST_SEED'];
  return s === undefined ? fallback : Number(s);
}
