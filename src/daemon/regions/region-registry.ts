/**
 * Shared-memory regions (docs/shmem.md): N pages shared by a creator with one target domain
 * under one random u32 id. This registry owns every region's record — who created it, who holds
 * it, whether it is released — and frees a region's memory and quota once it is released and
 * its last holder is gone (docs/shmem.md §3). Like the vchan registry it never touches a socket:
 * the connections hand it a Caller and send the grant it returns.
 */
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { MAX_SHM_PAGES, SHM_PAGE_SIZE } from '../../protocol/constants.js';
import type { ShmRegionInfo } from '../../protocol/types.js';
import { RegistryError } from '../registry/registry-error.js';
import { HOST_DOMAIN, type Caller } from '../registry/registry.js';
import { MemfdRegionMemory, PoolRegionMemory, type RegionMemory } from './region-memory.js';
import type { Pool } from '../pools/pool.js';
import type { Extent } from '../pools/slot-allocator.js';

/** What a holder receives: the region and the fd to map it from (owned by the registry). */
export interface RegionGrant extends ShmRegionInfo {
  /** Sent with SCM_RIGHTS (the kernel duplicates it); the registry keeps and closes its own. */
  fd: number;
  /** The pool of a pool-backed region (what a guest maps through its device), else undefined. */
  pool?: number | undefined;
}

/**
 * The four requests of docs/wire-protocol.md §6.11, for the connections. The host's registry
 * answers share() after a pool has grown if it must; a guest daemon's service asks the host.
 */
export interface RegionService {
  share(caller: Caller, domain: number, pages: number): Promise<RegionGrant>;
  map(caller: Caller, ownerDomain: number, id: number): RegionGrant | Promise<RegionGrant>;
  unmap(caller: Caller, ownerDomain: number, id: number): void | Promise<void>;
  release(caller: Caller, id: number): void | Promise<void>;
  /** LIST_REGIONS: the regions `caller` may see, ascending by (id, owner domain). */
  listFor(caller: Caller): RegionSnapshot[];
  /** The caller's connection ended: its holds go, the regions it created are released. */
  dropConnection(connId: number): void;
}

/** The byte quota regions share with vchans (docs/shmem.md §4): the vchan registry keeps it. */
export interface ShmByteQuota {
  /** Throws RegistryError EDQUOT when `bytes` more would exceed the caller's quota. */
  chargeShmBytes(caller: Caller, bytes: number): void;
  refundShmBytes(caller: Caller, bytes: number): void;
}

export interface RegionLimits {
  maxShmRegions: number;
  maxShmRegionsPerUid: number;
  /** How long a share waits for a pool being added (as a vchan init does). */
  capacityWaitMs: number;
}

/** Where regions with a guest on either side are carved (the pool manager, docs/shmem.md §6). */
export interface RegionPlacement {
  /** Largest region one pool can hold (bigger: -EMSGSIZE before any quota is charged). */
  readonly maxRegionBytes: number;
  allocateRegion(owner: number, target: number, bytes: number, hostUid?: number): { pool: Pool; extent: Extent };
  whenRegionCapacity(owner: number, target: number, bytes: number, timeoutMs: number, hostUid?: number): Promise<void>;
}

export interface RegionRegistryOptions {
  log: Logger;
  limits: RegionLimits;
  quota: ShmByteQuota;
  /** Is `domain` known (the host, or a guest the VMM reported)? */
  domainExists: (domain: number) => boolean;
  /** Pool extents for regions with a guest on either side; without it those are -EOPNOTSUPP. */
  placement?: RegionPlacement;
  /** The vchan policy between two domains (null: allowed, else why not), for guest pairs. */
  refusesDomains?: (a: number, b: number) => string | null;
}

/** A region's status, for `kvmchan status` and tests. */
export interface RegionSnapshot extends ShmRegionInfo {
  /** Whether a guest (not a host process) created it: then creatorUid/creatorPid mean nothing. */
  creatorIsGuest: boolean;
  creatorUid: number;
  creatorPid: number;
  released: boolean;
  /** Holds per connection, summed. */
  holds: number;
}

interface RegionRecord {
  readonly id: number;
  readonly ownerDomain: number;
  readonly targetDomain: number;
  readonly pages: number;
  readonly creator: Caller;
  readonly memory: RegionMemory;
  released: boolean;
  /** connId → number of holds (SHM_SHARE / SHM_MAP not yet given back). */
  readonly holders: Map<number, number>;
}

const keyOf = (ownerDomain: number, id: number): string => `${ownerDomain}:${id}`;

/**
 * A host creator's regions toward a guest go to that guest's host pools of the creator's uid:
 * processes of different uids never share a pool (docs/security.md, "Pools").
 */
const hostUidOf = (c: Caller): number | undefined => (c.scope === 'local' ? c.uid : undefined);

/** Whom region counts are charged to: as the vchan quotas (docs/security.md, "Quotas"). */
const principalOf = (c: Caller): string | null => (c.scope === 'guest' ? `dom:${c.domain}` : c.uid === 0 ? null : `uid:${c.uid}`);

export class RegionRegistry implements RegionService {
  readonly #log: Logger;
  readonly #limits: RegionLimits;
  readonly #quota: ShmByteQuota;
  readonly #domainExists: (domain: number) => boolean;
  readonly #placement: RegionPlacement | undefined;
  readonly #refusesDomains: (a: number, b: number) => string | null;
  readonly #regions = new Map<string, RegionRecord>();
  /** connId → regions it holds or created, so a connection's end never scans every region. */
  readonly #byConn = new Map<number, Set<RegionRecord>>();
  readonly #countBy = new Map<string, number>();

  constructor(opts: RegionRegistryOptions) {
    this.#log = opts.log;
    this.#limits = opts.limits;
    this.#quota = opts.quota;
    this.#domainExists = opts.domainExists;
    this.#placement = opts.placement;
    this.#refusesDomains = opts.refusesDomains ?? (() => null);
  }

  /** Regions not yet freed (released ones with a holder left included). */
  get count(): number {
    return this.#regions.size;
  }

  async share(caller: Caller, domain: number, pages: number): Promise<RegionGrant> {
    try {
      return this.shareNow(caller, domain, pages);
    } catch (err) {
      // A pool is being added for this pair (docs/pools.md): wait for it once, as vchans do.
      if (!(err instanceof RegistryError) || err.errnoName !== 'EAGAIN' || this.#placement === undefined) throw err;
      await this.#placement.whenRegionCapacity(
        caller.domain,
        domain,
        pages * SHM_PAGE_SIZE,
        this.#limits.capacityWaitMs,
        hostUidOf(caller),
      );
      return this.shareNow(caller, domain, pages);
    }
  }

  /** share() without waiting: EAGAIN while the pool it needs is being added. */
  shareNow(caller: Caller, domain: number, pages: number): RegionGrant {
    if (pages === 0) throw new RegistryError('EINVAL', 'a region has at least one page');
    if (pages > MAX_SHM_PAGES) throw new RegistryError('EMSGSIZE', `a region has at most ${MAX_SHM_PAGES} pages`);
    if (!this.#domainExists(domain)) throw new RegistryError('ESRCH', `no such domain ${domain}`);
    const local = caller.domain === HOST_DOMAIN && domain === HOST_DOMAIN;
    if (!local) {
      // A guest on either side: an extent of a pool the two share (docs/shmem.md §6).
      if (this.#placement === undefined) throw new RegistryError('EOPNOTSUPP', 'this daemon has no pools for regions with a guest');
      if (caller.domain === domain) throw new RegistryError('EINVAL', 'a guest shares regions with another domain, not with itself');
      const why = this.#refusesDomains(caller.domain, domain);
      if (why !== null) throw new RegistryError('EPERM', why);
      if (pages * SHM_PAGE_SIZE > this.#placement.maxRegionBytes) {
        throw new RegistryError('EMSGSIZE', `a region with a guest has at most ${this.#placement.maxRegionBytes} bytes (one pool)`);
      }
    }
    if (this.#regions.size >= this.#limits.maxShmRegions) throw new RegistryError('ENOSPC', 'region limit reached (limits.maxShmRegions)');
    const principal = principalOf(caller);
    if (principal !== null && (this.#countBy.get(principal) ?? 0) >= this.#limits.maxShmRegionsPerUid) {
      throw new RegistryError(
        'EDQUOT',
        `region quota of ${caller.scope === 'guest' ? `domain ${caller.domain}` : `uid ${caller.uid}`} reached (limits.maxShmRegionsPerUid = ${this.#limits.maxShmRegionsPerUid})`,
      );
    }
    const bytes = pages * SHM_PAGE_SIZE;
    this.#quota.chargeShmBytes(caller, bytes);
    let memory: RegionMemory;
    try {
      if (local) memory = new MemfdRegionMemory(bytes);
      else {
        const { pool, extent } = this.#placement!.allocateRegion(caller.domain, domain, bytes, hostUidOf(caller));
        memory = new PoolRegionMemory(pool, extent);
      }
    } catch (err) {
      this.#quota.refundShmBytes(caller, bytes);
      throw err;
    }
    const rec: RegionRecord = {
      id: this.#newId(caller.domain),
      ownerDomain: caller.domain,
      targetDomain: domain,
      pages,
      creator: caller,
      memory,
      released: false,
      holders: new Map(),
    };
    this.#regions.set(keyOf(rec.ownerDomain, rec.id), rec);
    if (principal !== null) this.#countBy.set(principal, (this.#countBy.get(principal) ?? 0) + 1);
    this.#hold(rec, caller.connId);
    this.#log.debug({ region: rec.id, owner: rec.ownerDomain, target: domain, pages, peerPid: caller.pid }, 'region shared');
    return this.#grant(rec);
  }

  map(caller: Caller, ownerDomain: number, id: number): RegionGrant {
    const rec = this.#visible(caller, ownerDomain, id);
    // docs/shmem.md §3: after release nobody new maps; the answer is that of an unknown id.
    if (rec === undefined || rec.released) throw notFound(ownerDomain, id);
    this.#hold(rec, caller.connId);
    this.#log.debug({ region: id, owner: ownerDomain, peerPid: caller.pid }, 'region mapped');
    return this.#grant(rec);
  }

  unmap(caller: Caller, ownerDomain: number, id: number): void {
    const rec = this.#regions.get(keyOf(ownerDomain, id));
    const n = rec?.holders.get(caller.connId) ?? 0;
    if (rec === undefined || n === 0) throw new RegistryError('ENOENT', `this connection holds no mapping of region ${ownerDomain}:${id}`);
    this.#unhold(rec, caller.connId, 1);
    this.#freeIfDone(rec);
  }

  release(caller: Caller, id: number): void {
    const rec = this.#visible(caller, caller.domain, id);
    if (rec === undefined || rec.released) throw notFound(caller.domain, id);
    if (rec.creator.connId !== caller.connId) throw new RegistryError('EPERM', `region ${id} was created on another connection`);
    this.#release(rec, 'released');
  }

  dropConnection(connId: number): void {
    for (const rec of [...(this.#byConn.get(connId) ?? [])]) {
      const n = rec.holders.get(connId) ?? 0;
      if (n > 0) this.#unhold(rec, connId, n);
      // wire-protocol.md §6.5: what a connection created goes with it.
      if (rec.creator.connId === connId && !rec.released) this.#release(rec, 'creator connection ended');
      else this.#freeIfDone(rec);
    }
    this.#byConn.delete(connId);
  }

  /** Every region not yet freed (status, tests). */
  list(): RegionSnapshot[] {
    return [...this.#regions.values()].map((r) => this.#snapshot(r));
  }

  /**
   * Read-only: the regions not yet freed that `caller` may see (wire-protocol.md §6.11,
   * LIST_REGIONS) — a privileged caller all of them; anyone else those it may map (mayMap: its
   * uid created them, or a guest created them for its domain), released ones its uid created
   * included, and those its connection holds. Seeing a region never lets anyone map it.
   */
  listFor(caller: Caller): RegionSnapshot[] {
    const out: RegionSnapshot[] = [];
    for (const r of this.#regions.values()) {
      const mine = caller.scope === 'local' && r.creator.scope === 'local' && r.creator.uid === caller.uid;
      if (caller.privileged || mine || mayMap(r, caller) || r.holders.has(caller.connId)) out.push(this.#snapshot(r));
    }
    // Ids are unique per owner domain only: sorted by (id, owner) for paging (§6.11).
    return out.sort((a, b) => a.id - b.id || a.ownerDomain - b.ownerDomain);
  }

  #snapshot(r: RegionRecord): RegionSnapshot {
    return {
      ...this.#info(r),
      creatorIsGuest: r.creator.scope === 'guest',
      creatorUid: r.creator.uid,
      creatorPid: r.creator.pid,
      released: r.released,
      holds: [...r.holders.values()].reduce((a, b) => a + b, 0),
    };
  }

  /** Daemon shutdown: every region freed at once (the processes keep what they mapped). */
  shutdown(): void {
    for (const rec of [...this.#regions.values()]) {
      rec.released = true;
      for (const [connId, n] of [...rec.holders]) this.#unhold(rec, connId, n);
      this.#freeIfDone(rec);
    }
    this.#byConn.clear();
  }

  /**
   * The region if this caller may map it (docs/shmem.md §2), else undefined — whether it exists
   * or not, so that the refusal says nothing about other domains' regions.
   */
  #visible(caller: Caller, ownerDomain: number, id: number): RegionRecord | undefined {
    const rec = this.#regions.get(keyOf(ownerDomain, id));
    if (rec === undefined) return undefined;
    return mayMap(rec, caller) ? rec : undefined;
  }

  #newId(ownerDomain: number): number {
    // Random over the whole u32 range without 0 (docs/shmem.md §2): an id reveals nothing about
    // the next one; the few collisions with a live region of the same owner draw again.
    for (;;) {
      const id = randomInt(1, 0x1_0000_0000);
      if (!this.#regions.has(keyOf(ownerDomain, id))) return id;
    }
  }

  #hold(rec: RegionRecord, connId: number): void {
    rec.holders.set(connId, (rec.holders.get(connId) ?? 0) + 1);
    let set = this.#byConn.get(connId);
    if (set === undefined) {
      set = new Set();
      this.#byConn.set(connId, set);
    }
    set.add(rec);
  }

  #unhold(rec: RegionRecord, connId: number, n: number): void {
    const left = (rec.holders.get(connId) ?? 0) - n;
    if (left > 0) {
      rec.holders.set(connId, left);
      return;
    }
    rec.holders.delete(connId);
    // The creator's connection stays indexed while its region is unreleased, so its end
    // releases it.
    if (rec.creator.connId === connId && !rec.released) return;
    const set = this.#byConn.get(connId);
    set?.delete(rec);
    if (set?.size === 0) this.#byConn.delete(connId);
  }

  #release(rec: RegionRecord, why: string): void {
    rec.released = true;
    const set = this.#byConn.get(rec.creator.connId);
    if (set !== undefined && !rec.holders.has(rec.creator.connId)) {
      set.delete(rec);
      if (set.size === 0) this.#byConn.delete(rec.creator.connId);
    }
    this.#log.debug({ region: rec.id, owner: rec.ownerDomain, holders: rec.holders.size, why }, 'region released');
    this.#freeIfDone(rec);
  }

  /** docs/shmem.md §3: released and no holder left → memory and quota go back. */
  #freeIfDone(rec: RegionRecord): void {
    if (!rec.released || rec.holders.size > 0) return;
    const key = keyOf(rec.ownerDomain, rec.id);
    if (this.#regions.get(key) !== rec) return;
    this.#regions.delete(key);
    rec.memory.free();
    this.#quota.refundShmBytes(rec.creator, rec.pages * SHM_PAGE_SIZE);
    const principal = principalOf(rec.creator);
    if (principal !== null) {
      const left = (this.#countBy.get(principal) ?? 1) - 1;
      if (left <= 0) this.#countBy.delete(principal);
      else this.#countBy.set(principal, left);
    }
    this.#log.debug({ region: rec.id, owner: rec.ownerDomain }, 'region freed');
  }

  #info(rec: RegionRecord): ShmRegionInfo {
    return {
      id: rec.id,
      ownerDomain: rec.ownerDomain,
      targetDomain: rec.targetDomain,
      pages: rec.pages,
      shmOffset: rec.memory.offset,
      shmLength: rec.pages * SHM_PAGE_SIZE,
    };
  }

  #grant(rec: RegionRecord): RegionGrant {
    return { ...this.#info(rec), fd: rec.memory.fd, pool: rec.memory.pool };
  }
}

/**
 * docs/shmem.md §2. Host processes are told apart by uid: when both sides are host processes
 * only the creator's uid may map (a process of that uid could reach the creator's memory
 * anyway); a guest is one principal as a whole (architecture.md rule 4).
 */
function mayMap(rec: RegionRecord, c: Caller): boolean {
  const sameLocalUser = c.scope === 'local' && rec.creator.scope === 'local' && c.uid === rec.creator.uid;
  if (c.domain === rec.ownerDomain && (c.scope === 'guest' || sameLocalUser)) return true;
  if (c.domain !== rec.targetDomain) return false;
  if (c.scope === 'guest') return true;
  // A host target: a region a guest created is for the host's clients (the socket's permissions
  // decide who they are, docs/security.md); one a host process created, for its uid only.
  return rec.creator.scope === 'guest' || sameLocalUser;
}

function notFound(ownerDomain: number, id: number): RegistryError {
  return new RegistryError('ENOENT', `no region ${id} of domain ${ownerDomain} that this caller may map`);
}
