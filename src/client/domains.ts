/**
 * Domains by name (docs/api.md, "Domains by name"): a caller may name the peer domain the way its VMM
 * does — a libvirt domain name, a QMP-served VM's configured name, `sim-<id>` — and the name is
 * resolved to the domain id through the daemon's LIST_DOMAINS on the caller's own connection.
 * Names are matched exactly (the daemon keeps at most 31 bytes of a name; a longer name matches
 * its first 31 bytes). A decimal string is an id.
 */
import type { DaemonConnection } from './daemon-connection.js';
import { Command } from '../protocol/constants.js';
import { registryName } from '../protocol/views.js';
import { InvalidArgumentError, UnknownDomainError } from '../errors.js';

export function checkDomain(domain: number | string | undefined): number | string {
  if (domain === undefined) return 0;
  if (typeof domain === 'string') {
    if (/^\d+$/.test(domain)) return checkDomain(Number(domain));
    if (domain.length === 0 || Buffer.byteLength(domain) > 1024) throw new InvalidArgumentError(`domain name must be 1-1024 bytes`);
    return domain;
  }
  if (!Number.isInteger(domain) || domain < 0 || domain > 0xffffffff)
    throw new InvalidArgumentError(`domain must be a u32 or a name, got ${domain}`);
  return domain;
}

/** The id of `domain` (an id is returned as is). */
export async function resolveDomain(conn: DaemonConnection, domain: number | string, signal?: AbortSignal): Promise<number> {
  if (typeof domain === 'number') return domain;
  const want = registryName(domain);
  for (let start = 0; ;) {
    const r = await conn.request(Command.LIST_DOMAINS, { start }, signal);
    const hit = r.body.entries.find((e) => e.name === want);
    if (hit !== undefined) return hit.domain;
    if (r.body.next === 0) throw new UnknownDomainError(domain);
    start = r.body.next;
  }
}
