/**
 * `kvmchan status --json`: a documented, versioned schema (docs/cli.md "status --json"), with
 * names instead of wire numbers — states as words, sizes in bytes, `null` for an unknown pid.
 * A change that removes or renames a field bumps `version`; adding fields does not.
 */
import { DomainFlag, EndpointState, NO_UID, POOL_STATE_NAMES, RegionFlag, SHM_PAGE_SIZE } from '../protocol/constants.js';
import type { DomainEntry, PoolEntry, RegionEntry, VchanEntry } from '../protocol/types.js';

export const STATUS_JSON_VERSION = 1;

export type EndpointStateName = 'waiting' | 'connected' | 'closed';

export interface StatusJson {
  version: typeof STATUS_JSON_VERSION;
  domains: {
    id: number;
    name: string;
    /** vchans with an end in this domain */
    vchans: number;
    /** the host (domain 0) */
    host: boolean;
    /** its daemon is up (always for the host) */
    daemonUp: boolean;
    /** the domain of the daemon that answered */
    self: boolean;
  }[];
  pools: {
    id: number;
    /** one member (a guest's pool with the host) or two (guest ↔ guest) */
    members: { domain: number; attached: boolean }[];
    state: 'ready' | 'pending' | 'retired' | 'unknown';
    sizeBytes: number;
    freeBytes: number;
    vectors: number;
    freeVectors: number;
    vchans: number;
  }[];
  vchans: {
    handle: number;
    port: number;
    serverDomain: number;
    clientDomain: number;
    serverState: EndpointStateName;
    clientState: EndpointStateName;
    ringBytes: { clientToServer: number; serverToClient: number };
    /** bytes moved so far each way */
    bytes: { clientToServer: number; serverToClient: number };
    serverPid: number | null;
    clientPid: number | null;
  }[];
  /** Shared-memory regions the caller may see (added in version 1: readers of older output find none). */
  regions: {
    id: number;
    ownerDomain: number;
    targetDomain: number;
    pages: number;
    sizeBytes: number;
    /** released by its creator: nobody new maps it; it lives while `holds` > 0 */
    released: boolean;
    /** mappings not yet given back */
    holds: number;
    /** null when a guest created it */
    creatorUid: number | null;
    creatorPid: number | null;
  }[];
}

export function endpointStateName(s: number): EndpointStateName {
  return s === EndpointState.CONNECTED ? 'connected' : s === EndpointState.WAITING ? 'waiting' : 'closed';
}

export function toStatusJson(st: { domains: DomainEntry[]; pools: PoolEntry[]; vchans: VchanEntry[]; regions: RegionEntry[] }): StatusJson {
  return {
    version: STATUS_JSON_VERSION,
    domains: st.domains.map((d) => ({
      id: d.domain,
      name: d.name,
      vchans: d.vchans,
      host: (d.flags & DomainFlag.HOST) !== 0,
      daemonUp: (d.flags & DomainFlag.CONTROL_UP) !== 0,
      self: (d.flags & DomainFlag.SELF) !== 0,
    })),
    pools: st.pools.map((p) => ({
      id: p.pool,
      members: [p.memberA, p.memberB]
        .map((domain, i) => ({ domain, attached: (p.joined & (1 << i)) !== 0 }))
        .filter((m, i) => i === 0 || m.domain !== 0),
      state: POOL_STATE_NAMES[p.state] ?? 'unknown',
      sizeBytes: p.size,
      freeBytes: p.freeBytes,
      vectors: p.vectors,
      freeVectors: p.freeVectors,
      vchans: p.vchans,
    })),
    vchans: st.vchans.map((v) => ({
      handle: v.handle,
      port: v.port,
      serverDomain: v.serverDomain,
      clientDomain: v.clientDomain,
      serverState: endpointStateName(v.serverState),
      clientState: endpointStateName(v.clientState),
      // The server reads c2s (readOrder) and writes s2c (writeOrder), ring-protocol.md §3.
      ringBytes: { clientToServer: 2 ** v.readOrder, serverToClient: 2 ** v.writeOrder },
      bytes: { clientToServer: v.bytesClientToServer, serverToClient: v.bytesServerToClient },
      serverPid: v.serverPid === 0 ? null : v.serverPid,
      clientPid: v.clientPid === 0 ? null : v.clientPid,
    })),
    regions: st.regions.map((r) => ({
      id: r.id,
      ownerDomain: r.ownerDomain,
      targetDomain: r.targetDomain,
      pages: r.pages,
      sizeBytes: r.pages * SHM_PAGE_SIZE,
      released: (r.flags & RegionFlag.RELEASED) !== 0,
      holds: r.holds,
      creatorUid: r.creatorUid === NO_UID ? null : r.creatorUid,
      creatorPid: r.creatorPid === 0 ? null : r.creatorPid,
    })),
  };
}
