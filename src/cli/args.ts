/** CLI argument parsers: every value validated, errors phrased for the operator. */
import { InvalidArgumentError } from 'commander';

export function parseInteger(value: string, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${what} must be a non-negative integer, got '${value}'`);
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${what} must be in [${min}, ${max}], got ${value}`);
  return n;
}

export function parsePort(value: string): number {
  return parseInteger(value, 'port', 0, 0xffffffff);
}

/** A domain id, or a domain's name (resolved by the daemon: libvirt or QMP VM names, sim-N). */
export function parseDomain(value: string): number | string {
  if (/^\d+$/.test(value)) return parseInteger(value, 'domain', 0, 0x7fffffff);
  if (value === '' || Buffer.byteLength(value) > 1024) throw new InvalidArgumentError(`domain must be an id or a name, got '${value}'`);
  return value;
}

/** Sizes like 64K, 1M, 1G (powers of 1024). */
export function parseSize(value: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(value.trim());
  if (m === null) throw new InvalidArgumentError(`invalid size '${value}' (examples: 4096, 64K, 1M, 1G)`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[(m[2] ?? '').charAt(0).toUpperCase()] ?? 1;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`size '${value}' too large`);
  return n;
}
