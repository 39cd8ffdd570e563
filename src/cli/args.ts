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

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * The one size syntax of every byte option (docs/cli.md "Conventions"): a number, maybe
 * with a fraction, and an optional binary unit K, M, G, T (KiB… also accepted; `B` optional):
 * 4096, 64K, 1.5G. Fractions must come out as whole bytes.
 */
export function parseSize(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|B)?$/i.exec(value.trim());
  if (m === null) throw new InvalidArgumentError(`invalid size '${value}' (examples: 4096, 64K, 1.5M, 1G)`);
  const n = Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toUpperCase()] ?? 1);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`size '${value}' is not a whole number of bytes below 2^53`);
  return n;
}

/** A size the way parseSize reads it, as short as exact: 65536 → 64K, 1610612736 → 1.5G. */
export function formatSize(n: number): string {
  for (const unit of ['T', 'G', 'M', 'K']) {
    const v = n / (SIZE_UNITS[unit] ?? 1);
    if (v >= 1 && Number.isInteger(v * 1000)) return `${v}${unit}`;
  }
  return String(n);
}

const TIME_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * The one time syntax of every time option: a number and a unit, ms, s, m or h (500ms, 1s,
 * 1.5s, 2m); a bare number is milliseconds.
 */
export function parseDuration(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim());
  if (m === null) throw new InvalidArgumentError(`invalid time '${value}' (examples: 500ms, 1s, 1.5s, 2m)`);
  const n = Number(m[1]) * (TIME_UNITS[m[2] ?? 'ms'] ?? 1);
  if (!Number.isInteger(n) || n > 0x7fffffff) throw new InvalidArgumentError(`time '${value}' must be a whole number of ms up to ~24 days`);
  return n;
}

export function formatDuration(ms: number): string {
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
