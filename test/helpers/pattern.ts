/**
 * A deterministic byte stream for integration tests: byte `i` of the stream of `seed` is
 * `table[i mod PERIOD]`. The period is prime, so it never lines up with a power-of-two ring,
 * and any prefix a reader received can be checked without the writer's cooperation.
 */
import { Prng } from './prng.js';

export const PATTERN_PERIOD = 65521;

export class Pattern {
  /** The table twice over, so any run of up to PERIOD bytes is one contiguous slice. */
  readonly #doubled: Buffer;

  constructor(seed: number) {
    const one = new Prng(seed).bytes(PATTERN_PERIOD);
    this.#doubled = Buffer.concat([one, one]);
  }

  /** `n` (≤ PERIOD) bytes of the stream starting at absolute position `pos`. */
  slice(pos: number, n: number): Buffer {
    if (n > PATTERN_PERIOD) throw new RangeError(`pattern slice of ${n} bytes exceeds the period`);
    const start = pos % PATTERN_PERIOD;
    return this.#doubled.subarray(start, start + n);
  }

  /** Index of the first byte of `data` that differs from the stream at `pos`, or -1. */
  mismatch(pos: number, data: Uint8Array): number {
    for (let off = 0; off < data.length; off += PATTERN_PERIOD) {
      const n = Math.min(PATTERN_PERIOD, data.length - off);
      const want = this.slice(pos + off, n);
      if (!want.equals(data.subarray(off, off + n))) {
        for (let i = 0; i < n; i++) if (want[i] !== data[off + i]) return off + i;
      }
    }
    return -1;
  }
}
