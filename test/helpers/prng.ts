/** Small seeded PRNG (xorshift32) so property and fuzz tests are reproducible from a printed seed. */
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
  pick<T>(items: readonly T[]): T {
    return items[this.next() % items.length]!;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

export function seedFromEnv(fallback: number): number {
  const s = process.env['KVMCHAN_TEST_SEED'];
  return s === undefined ? fallback : Number(s);
}
