/**
 * Random valid message bodies, generated from the field descriptors of the message table (so a
 * new message is fuzzed without touching the tests).
 */
import type { Field, Struct } from '../../src/protocol/fields.js';
import type { Prng } from '../helpers/prng.js';

const CHARS = ['a', 'Z', '0', '-', '_', ' ', 'é', 'ö', '€', '中', '😀', '\u0001', '\u007f'];

function randomString(rng: Prng, maxBytes: number): string {
  let s = '';
  let bytes = 0;
  const want = rng.below(maxBytes + 1);
  while (bytes < want) {
    const c = rng.pick(CHARS);
    const n = Buffer.byteLength(c);
    if (bytes + n > maxBytes) break;
    s += c;
    bytes += n;
  }
  return s;
}

function randomU64(rng: Prng): number {
  switch (rng.below(4)) {
    case 0:
      return rng.pick([0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]);
    case 1:
      return rng.next();
    default:
      return (rng.next() & 0x1fffff) * 2 ** 32 + rng.next();
  }
}

function randomUint(rng: Prng, bytes: 1 | 2 | 4): number {
  const max = 2 ** (8 * bytes) - 1;
  return rng.chance(0.2) ? rng.pick([0, 1, max]) : rng.below(max + 1);
}

export function randomField(rng: Prng, field: Field<unknown>, maxEntries: number): unknown {
  const info = field.info;
  switch (info.kind) {
    case 'uint':
      return info.bytes === 8 ? randomU64(rng) : randomUint(rng, info.bytes);
    case 's32':
      return rng.next() | 0;
    case 'enum':
      return rng.pick(info.values);
    case 'range':
      return rng.int(info.min, info.max);
    case 'flags': {
      return (rng.next() & info.mask) >>> 0;
    }
    case 'string':
      return randomString(rng, info.bytes - 1);
    case 'array': {
      const n = rng.chance(0.02) ? maxEntries : rng.below(Math.min(maxEntries, 12) + 1);
      return Array.from({ length: n }, () => randomStruct(rng, info.entry, 0));
    }
  }
}

/** A random value of `s`; arrays get at most `maxEntries` entries. */
export function randomStruct(rng: Prng, s: Struct<unknown>, maxEntries: number): unknown {
  const out: Record<string, unknown> = {};
  for (const e of s.entries) {
    if (Array.isArray(e)) {
      const [name, field] = e;
      out[name] = randomField(rng, field, maxEntries);
    }
  }
  return out;
}
