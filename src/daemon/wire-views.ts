/**
 * Daemon state as wire entries, shared by the local socket and the guest link so both answer
 * LIST_VCHANS and LIST_POOLS with the same bytes (wire-protocol.md §6.7, §6.10); and regions
 * for LIST_REGIONS (§6.11).
 */
import { NO_UID, POOL_STATE_NAMES, RegionFlag, type PoolState } from '../protocol/constants.js';
import type { PoolEntry, RegionEntry, VchanEntry } from '../protocol/types.js';
import type { RegionSnapshot } from './regions/region-registry.js';
import type { VchanSnapshot } from './registry/registry.js';
import type { PoolStatus } from './vchan-service.js';

/**
 * A registry snapshot as the wire's VchanEntry (wire-protocol.md §6.7). States come from
 * shared memory: reported, never trusted — clamped to what the wire allows.
 */
export function vchanEntry(v: VchanSnapshot, showPids = true): VchanEntry {
  return {
    handle: v.handle,
    serverDomain: v.serverDomain,
    clientDomain: v.clientDomain,
    port: v.port,
    serverState: v.serverState === 1 ? 1 : 0,
    clientState: clampState(v.clientState),
    readOrder: v.c2sOrder,
    writeOrder: v.s2cOrder,
    serverPid: showPids ? v.serverPid : 0,
    clientPid: showPids ? v.clientPid : 0,
    bytesClientToServer: v.bytesClientToServer,
    bytesServerToClient: v.bytesServerToClient,
  };
}

/** PoolStatus → the wire's PoolEntry (wire-protocol.md §6.10). */
export function poolEntry(p: PoolStatus): PoolEntry {
  const [a = 0, b = 0] = p.members;
  return {
    pool: p.pool,
    memberA: a,
    memberB: b,
    vectors: p.vectors,
    freeVectors: p.freeVectors,
    vchans: p.vchans,
    state: POOL_STATE_NAMES.indexOf(p.state) as PoolState,
    joined: (p.joined.includes(a) && a !== 0 ? 1 : 0) | (p.joined.includes(b) && b !== 0 ? 2 : 0),
    size: p.size,
    freeBytes: p.freeBytes,
  };
}

/** A region's snapshot as the wire's RegionEntry (wire-protocol.md §6.11). */
export function regionEntry(r: RegionSnapshot, showPids = true): RegionEntry {
  return {
    id: r.id,
    ownerDomain: r.ownerDomain,
    targetDomain: r.targetDomain,
    pages: r.pages,
    flags: r.released ? RegionFlag.RELEASED : 0,
    // A u32 on the wire; a connection cannot hold 2^32 times, but never let encoding fail (EIO).
    holds: Math.min(r.holds, 0xffff_ffff),
    creatorUid: r.creatorIsGuest ? NO_UID : r.creatorUid,
    creatorPid: showPids && !r.creatorIsGuest ? r.creatorPid : 0,
  };
}

function clampState(s: number): 0 | 1 | 2 {
  return s === 1 || s === 2 ? s : 0;
}
