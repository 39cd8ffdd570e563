/**
 * The host's pool manager (architecture.md rule 2, docs/pools.md): the VchanResourceFactory
 * the registry uses. Vchans between host processes get a memfd of their own
 * (MemfdResourceFactory); every vchan involving a guest is carved out of a pool —
 * host↔G out of G's host pools of the host uid at the host end (processes of different uids
 * never share a pool: a pool's memfd maps all of it, docs/security.md "Pools"), A↔B out of
 * the pools shared by exactly A and B.
 *
 * Pools appear without PCI hot-plug on the request path: a guest's first host pool
 * (for the daemon's own uid) when the guest appears, the next ones ahead of demand (after an
 * allocation leaves less than `lowWater` of the vectors or bytes of that set free), another
 * uid's and a pair's first pool on its first request. A request that finds no room gets EAGAIN while
 * a pool is being added; the registry awaits whenCapacity() and retries once.
 *
 * Only pools whose members are all attached are used. A member that leaves (its
 * QEMU or simulated guest daemon went away) is reported with 'member-left'; when it
 * attaches again the pool is usable again.
 */
import { setLongTimeout, type LongTimer } from '../../timer.js';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { Logger } from 'pino';
import { regionLength, MIN_ORDER, type RingGeometry } from '../../ring/layout.js';
import { MemfdResourceFactory, type VchanResourceFactory, type VchanResources } from '../registry/vchan-resources.js';
import { RegistryError } from '../registry/registry-error.js';
import { InvalidArgumentError } from '../../errors.js';
import { ensureDomainDir, poolSocketName, removeDomainDirIfEmpty, removeDomainsRootIfEmpty } from '../vmm/domain-dir.js';
import { Pool, type PoolMember } from './pool.js';
import type { PoolStateName } from '../../protocol/constants.js';
import { PoolResources } from './pool-resources.js';
import { DEFAULT_POOL_CONFIG, poolConfigSchema, type PoolConfig } from './pool-config.js';
import { PAGE, type Extent } from './slot-allocator.js';
import { DEVICE_HEADER_PAGE } from '../../ivshmem/device-header.js';
import type { IvshmemServer } from '../../ivshmem/server.js';
import { closeStoredDevice, type StoredDevice } from '../vmm/device-fds.js';

/** A host pool of a running VM, rebuilt from stored fds (PoolManager.addDomain). */
export interface AdoptedPool {
  pool: number;
  hostUid: number;
  /** Peer 0 (the host) and 1 (the guest). */
  device: StoredDevice;
}

const HOST_DOMAIN = 0;

/** What a member guest is told about a pool (EVENT_POOL_ADDED, wire-protocol.md §7.2). */
export interface PoolAnnouncement {
  pool: number;
  /** The guest's IVPosition on the pool. */
  peerId: number;
  vectors: number;
  size: number;
  /** Socket file name inside the guest's device directory. */
  socket: string;
  /** The same socket's full path on the host (for a VMM backend's chardev, and logs). */
  socketPath: string;
}

export interface PoolInfo {
  pool: number;
  /** A host pool: the host uid whose vchans it carries (undefined: a pair pool). */
  hostUid?: number;
  /** Member guests, ascending (one: a host pool; two: a pair pool). */
  members: number[];
  /** Members currently attached. */
  joined: number[];
  state: PoolStateName;
  size: number;
  vectors: number;
  freeBytes: number;
  freeVectors: number;
  vchans: number;
}

export interface PoolManagerEvents {
  /** A pool was created (announced to its members). */
  'pool-added': [info: PoolInfo];
  /** A pool was retired (its guest is gone, or the manager closed). */
  'pool-removed': [poolId: number];
  /** A member attached to a pool (after 'pool-added', or again after it left). */
  'member-joined': [domain: number, poolId: number];
  /**
   * A member left a pool (its QEMU or guest daemon went away). Vchans of that pool that
   * involve it cannot be kicked any more (its eventfds are gone; a re-attached member gets
   * new ones): the registry should treat their sides in that domain as dead.
   */
  'member-left': [domain: number, poolId: number];
}

export interface PoolManagerOptions {
  /** The daemon's runtime directory; sockets go to `<runtimeDir>/domains/<id>/pool-<n>.sock`. */
  runtimeDir: string;
  /** Pool sizing (pool-config.ts); validated here too. */
  config?: Partial<PoolConfig>;
  log?: Logger;
  /**
   * Called for each member when a pool is created: forward it over that guest's
   * link (EVENT_POOL_ADDED) or, with a real VMM, plug the device. Exceptions are logged.
   */
  announce?: (domain: number, announcement: PoolAnnouncement) => void;
  /** A guest's device key (docs/ivshmem.md §9): tags in the pools' device headers. */
  deviceKey?: (domain: number) => Uint8Array | undefined;
  /** For host↔host vchans. Default: a MemfdResourceFactory. */
  hostFactory?: VchanResourceFactory;
  /**
   * The host uid of a host↔guest vchan when create() is not told one, and whose host pool a
   * guest gets when it appears: the daemon's own (default: geteuid()).
   */
  defaultHostUid?: number;
}

interface CapacityWaiter {
  key: string;
  need: number;
  /** A vchan needs a free vector too; a region does not. */
  vector: boolean;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: LongTimer | undefined;
}

/** Smallest region (two 1 KiB rings), page-rounded: what "any room at all" means. */
const MIN_EXTENT = Math.ceil(regionLength({ c2sOrder: MIN_ORDER, s2cOrder: MIN_ORDER }) / PAGE) * PAGE;

/** The set of guest G's host pools for host uid U: "G@U". */
function hostSetKey(guest: number, hostUid: number): string {
  return `${guest}@${hostUid}`;
}

/** The member guests of a set key ("G@U" or "A:B"). */
function membersOf(key: string): number[] {
  return key.split('@')[0]!.split(':').map(Number);
}

/**
 * The host side of a guest's region pools ("G@shm"): regions that guest created for the host,
 * which any host client may map (docs/shmem.md §2), so they never share a pool with one uid's
 * vchans (docs/security.md, "Pools").
 */
const REGION_SET = 'shm';

function hostUidOf(key: string): number | undefined {
  const at = key.indexOf('@');
  if (at < 0 || key.slice(at + 1) === REGION_SET) return undefined;
  return Number(key.slice(at + 1));
}

function roundToPage(n: number): number {
  return Math.ceil(n / PAGE) * PAGE;
}

export class PoolManager extends EventEmitter<PoolManagerEvents> implements VchanResourceFactory {
  readonly config: PoolConfig;
  readonly runtimeDir: string;
  readonly #log: Logger | undefined;
  readonly #announce: ((domain: number, a: PoolAnnouncement) => void) | undefined;
  readonly #deviceKey: ((domain: number) => Uint8Array | undefined) | undefined;
  readonly #hostFactory: VchanResourceFactory;
  readonly #defaultHostUid: number;
  /** Guests we serve (addDomain). */
  readonly #domains = new Set<number>();
  /** Open pools by set key; retired pools leave their set at once. */
  readonly #sets = new Map<string, Pool[]>();
  /** Every pool not yet finalized (retired ones keep their memory until their vchans go). */
  readonly #pools = new Map<number, Pool>();
  readonly #waiters = new Set<CapacityWaiter>();
  /** Size of the last request each set could not serve (whenCapacity waits for that much). */
  readonly #shortfall = new Map<string, number>();
  #nextId = 1;
  #closed = false;

  constructor(opts: PoolManagerOptions) {
    super();
    const parsed = poolConfigSchema.safeParse({ ...DEFAULT_POOL_CONFIG, ...opts.config });
    if (!parsed.success) {
      throw new InvalidArgumentError(
        `invalid pool configuration: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      );
    }
    this.config = parsed.data;
    this.runtimeDir = path.resolve(opts.runtimeDir);
    this.#log = opts.log?.child({ component: 'pools' });
    this.#announce = opts.announce;
    this.#deviceKey = opts.deviceKey;
    this.#hostFactory = opts.hostFactory ?? new MemfdResourceFactory();
    this.#defaultHostUid = opts.defaultHostUid ?? process.geteuid?.() ?? 0;
  }

  // --- VchanResourceFactory --------------------------------------------------------------------

  create(geometry: RingGeometry, serverDomain: number, clientDomain: number, hostUid?: number): VchanResources {
    if (serverDomain === HOST_DOMAIN && clientDomain === HOST_DOMAIN) {
      return this.#hostFactory.create(geometry, serverDomain, clientDomain);
    }
    const key = this.#keyFor(serverDomain, clientDomain, hostUid);
    const length = regionLength(geometry);
    if (length > this.config.poolSize) {
      throw new RegistryError('EINVAL', `a vchan of ${length} bytes does not fit a pool of ${this.config.poolSize} bytes`);
    }
    return this.#place(key, length, `between domains ${serverDomain} and ${clientDomain}`, (pool) => {
      const got = pool.allocate(length);
      if (got === null) return null;
      this.#log?.debug(
        { pool: pool.id, offset: got.extent.offset, length: got.extent.length, vector: got.vector, serverDomain, clientDomain },
        'vchan placed in pool',
      );
      return new PoolResources(pool, got.extent, got.vector, geometry, serverDomain, clientDomain);
    });
  }

  /**
   * A page-aligned extent without a vector for a shared-memory region between `owner` and
   * `target` (docs/shmem.md §6): in the host pools of `hostUid` when the host creates it for a
   * guest, in the guest's region pools (`G@shm`, holding nothing but regions that guest made
   * for the host, which any host client may map: docs/security.md "Pools") when a guest creates
   * it for the host, in the pair's pools between two guests. Throws EAGAIN while a pool is
   * being added (await whenRegionCapacity() and retry), ENOSPC when none may be added.
   */
  allocateRegion(owner: number, target: number, bytes: number, hostUid?: number): { pool: Pool; extent: Extent } {
    const key = this.#regionKeyFor(owner, target, hostUid);
    const length = roundToPage(bytes);
    if (length > this.maxRegionBytes) {
      throw new RegistryError(
        'EMSGSIZE',
        `a region of ${length} bytes does not fit a pool of ${this.config.poolSize} bytes (pools.poolSize)`,
      );
    }
    return this.#place(
      key,
      length,
      `between domains ${owner} and ${target}`,
      (pool) => {
        const extent = pool.allocateExtent(length);
        if (extent === null) return null;
        this.#log?.debug({ pool: pool.id, offset: extent.offset, length, owner, target }, 'region placed in pool');
        return { pool, extent };
      },
      false,
    );
  }

  /** Largest region a pool can hold: all of it but the device header page. */
  get maxRegionBytes(): number {
    return this.config.poolSize - DEVICE_HEADER_PAGE;
  }

  /** Resolves when allocateRegion() of `bytes` may succeed (after EAGAIN), as whenCapacity(). */
  whenRegionCapacity(owner: number, target: number, bytes: number, timeoutMs: number, hostUid?: number): Promise<void> {
    let key: string;
    try {
      key = this.#regionKeyFor(owner, target, hostUid);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return this.#waitFor(key, roundToPage(bytes), false, timeoutMs, `between domains ${owner} and ${target}`);
  }

  /** First fit over the ready pools of set `key`; else a pool is added and EAGAIN thrown. */
  #place<T>(key: string, length: number, between: string, alloc: (pool: Pool) => T | null, vector = true): T {
    const set = this.#sets.get(key) ?? [];
    for (const pool of set) {
      const got = alloc(pool);
      if (got === null) continue;
      this.#shortfall.delete(key);
      this.#aheadOfDemand(key);
      return got;
    }
    // No room anywhere ready. Is a pool on its way (a member still attaching)?
    const pending = set.some((p) => p.pending);
    if (!pending) {
      const why = this.#cannotGrow(key);
      if (why !== null) throw new RegistryError('ENOSPC', `no pool has room for ${length} bytes ${between}: ${why}`);
      try {
        this.#addPool(key);
      } catch (err) {
        this.#log?.error({ err, key }, 'cannot create a pool');
        throw new RegistryError('ENOMEM', `cannot create a pool: ${(err as Error).message}`);
      }
    }
    if (vector) this.#shortfall.set(key, Math.max(this.#shortfall.get(key) ?? 0, roundToPage(length)));
    throw new RegistryError('EAGAIN', `no pool with room ${between} yet; one is being added`);
  }

  whenCapacity(serverDomain: number, clientDomain: number, timeoutMs: number, hostUid?: number): Promise<void> {
    if (serverDomain === HOST_DOMAIN && clientDomain === HOST_DOMAIN) return Promise.resolve();
    let key: string;
    try {
      key = this.#keyFor(serverDomain, clientDomain, hostUid);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return this.#waitFor(
      key,
      this.#shortfall.get(key) ?? MIN_EXTENT,
      true,
      timeoutMs,
      `between domains ${serverDomain} and ${clientDomain}`,
    );
  }

  #waitFor(key: string, need: number, vector: boolean, timeoutMs: number, between: string): Promise<void> {
    if (this.#hasRoom(key, need, vector)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w: CapacityWaiter = { key, need, vector, resolve, reject, timer: undefined };
      if (Number.isFinite(timeoutMs)) {
        w.timer = setLongTimeout(() => {
          this.#settle(w, new RegistryError('EAGAIN', `no pool capacity ${between} within ${timeoutMs} ms`));
        }, timeoutMs).unref();
      }
      this.#waiters.add(w);
    });
  }

  // --- domains ---------------------------------------------------------------------------

  /**
   * A guest appeared: its device directory and its first host pool (the daemon's uid's), now.
   * Idempotent. `adopted`: host pools of a running VM rebuilt from stored fds (a restarted
   * daemon, docs/pools.md §5): they keep their ids, are attached already and are not announced
   * (the VM has them; its guest daemon hears of them when it says hello). One that cannot be
   * rebuilt is closed and left out (its device stays in the VM, inert).
   */
  addDomain(id: number, adopted: readonly AdoptedPool[] = []): void {
    this.#checkOpen();
    if (!Number.isInteger(id) || id <= HOST_DOMAIN) throw new InvalidArgumentError(`not a guest domain: ${id}`);
    if (this.#domains.has(id)) {
      for (const a of adopted) closeStoredDevice(a.device);
      return;
    }
    ensureDomainDir(this.runtimeDir, id);
    this.#domains.add(id);
    for (const a of adopted) {
      try {
        this.#adoptPool(id, a);
      } catch (err) {
        this.#log?.error({ pool: a.pool, domain: id, err: (err as Error).message }, 'cannot adopt a stored pool');
      }
    }
    const key = hostSetKey(id, this.#defaultHostUid);
    if ((this.#sets.get(key) ?? []).length === 0) this.#addPool(key);
  }

  /**
   * A guest is gone: every pool it is a member of is retired (sockets removed, the other
   * member of a pair pool disconnected). Call after registry.removeDomain(id): memory of
   * vchans still held by host processes stays mapped until the registry releases them.
   */
  removeDomain(id: number): void {
    if (!this.#domains.delete(id)) return;
    for (const [key, set] of [...this.#sets]) {
      if (!set.some((p) => p.memberOf(id) !== undefined)) continue;
      this.#sets.delete(key);
      this.#shortfall.delete(key);
      for (const p of set) this.#retire(p, `domain ${id} removed`);
    }
    for (const w of [...this.#waiters]) {
      if (membersOf(w.key).includes(id)) this.#settle(w, new RegistryError('ESRCH', `domain ${id} is gone`));
    }
    removeDomainDirIfEmpty(this.runtimeDir, id);
  }

  /** Announcements of every open pool `domain` is a member of (for a guest that (re)connects). */
  poolsOf(domain: number): PoolAnnouncement[] {
    const out: PoolAnnouncement[] = [];
    for (const set of this.#sets.values()) {
      for (const p of set) {
        const m = p.memberOf(domain);
        if (m !== undefined && p.serving) out.push(this.#announcement(p, m));
      }
    }
    return out.sort((a, b) => a.pool - b.pool);
  }

  /** Status of every pool not yet released, ascending by id. */
  pools(): PoolInfo[] {
    return [...this.#pools.values()].sort((a, b) => a.id - b.id).map((p) => this.#info(p));
  }

  /** Number of pools, open or retired with memory still in use. */
  get poolCount(): number {
    return this.#pools.size;
  }

  /**
   * Daemon shutdown (after registry.shutdown()): every pool retired, waiters refused.
   * Memory of vchans not yet released stays until their release().
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#waiters]) this.#settle(w, new RegistryError('ESHUTDOWN', 'daemon shutting down'));
    for (const set of this.#sets.values()) for (const p of set) this.#retire(p, 'shutdown');
    this.#sets.clear();
    for (const id of this.#domains) removeDomainDirIfEmpty(this.runtimeDir, id);
    this.#domains.clear();
    removeDomainsRootIfEmpty(this.runtimeDir);
  }

  // --- internals -------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closed) throw new RegistryError('ESHUTDOWN', 'pool manager is closed');
  }

  /** "G@U" for host↔G with host uid U, "A:B" (A < B) for a guest pair. */
  #keyFor(serverDomain: number, clientDomain: number, hostUid = this.#defaultHostUid): string {
    this.#checkOpen();
    if (serverDomain === clientDomain) {
      throw new RegistryError('EINVAL', `domain ${serverDomain} cannot have a vchan to itself through a pool`);
    }
    for (const d of [serverDomain, clientDomain]) {
      if (d !== HOST_DOMAIN && !this.#domains.has(d)) throw new RegistryError('ESRCH', `no pools for domain ${d}: it is not attached`);
    }
    if (serverDomain === HOST_DOMAIN) return hostSetKey(clientDomain, hostUid);
    if (clientDomain === HOST_DOMAIN) return hostSetKey(serverDomain, hostUid);
    return serverDomain < clientDomain ? `${serverDomain}:${clientDomain}` : `${clientDomain}:${serverDomain}`;
  }

  /** The set a shared-memory region between `owner` and `target` is carved from (allocateRegion). */
  #regionKeyFor(owner: number, target: number, hostUid = this.#defaultHostUid): string {
    this.#checkOpen();
    if (owner === target) throw new RegistryError('EINVAL', `domain ${owner} cannot share a region with itself through a pool`);
    for (const d of [owner, target]) {
      if (d !== HOST_DOMAIN && !this.#domains.has(d)) throw new RegistryError('ESRCH', `no pools for domain ${d}: it is not attached`);
    }
    if (owner === HOST_DOMAIN) return hostSetKey(target, hostUid);
    if (target === HOST_DOMAIN) return `${owner}@${REGION_SET}`;
    return owner < target ? `${owner}:${target}` : `${target}:${owner}`;
  }

  /** Why the set `key` may not get another pool, or null. */
  #cannotGrow(key: string): string | null {
    const perSet = this.config.maxPoolsPerSet;
    const inSet = (this.#sets.get(key) ?? []).length;
    if (inSet >= perSet) {
      const what = key.includes(':')
        ? `the pair ${key.replace(':', '↔')}`
        : hostUidOf(key) === undefined
          ? `the regions of ${key.split('@')[0]} for the host`
          : `host uid ${key.split('@')[1]}↔${key.split('@')[0]}`;
      return `${what} already has ${inSet} pools (pools.maxPoolsPerSet ${perSet})`;
    }
    const max = this.config.maxPoolsPerDomain;
    for (const d of membersOf(key)) {
      const n = this.#membershipCount(d);
      if (n >= max) return `domain ${d} is already a member of ${n} pools (pools.maxPoolsPerDomain ${max})`;
    }
    return null;
  }

  #membershipCount(domain: number): number {
    let n = 0;
    for (const set of this.#sets.values()) for (const p of set) if (p.memberOf(domain) !== undefined) n++;
    return n;
  }

  /** Pool ids up to `max` may still be plugged in running VMs: never hand them out again. */
  reservePoolIds(max: number): void {
    if (Number.isInteger(max) && max >= this.#nextId) this.#nextId = max + 1;
  }

  /** A pool's device and set, for storing its fds (undefined once it stopped serving). */
  servingPool(poolId: number): { device: IvshmemServer; hostUid: number | undefined; members: readonly PoolMember[] } | undefined {
    const p = this.#pools.get(poolId);
    if (p === undefined || !p.serving) return undefined;
    return { device: p.device, hostUid: hostUidOf(p.key), members: p.members };
  }

  #adoptPool(domain: number, a: AdoptedPool): void {
    if (this.#pools.has(a.pool)) {
      closeStoredDevice(a.device);
      throw new InvalidArgumentError(`pool id ${a.pool} is already in use`);
    }
    const key = hostSetKey(domain, a.hostUid);
    const member: PoolMember = {
      domain,
      peerId: 1,
      socketPath: path.join(ensureDomainDir(this.runtimeDir, domain), poolSocketName(a.pool)),
    };
    this.reservePoolIds(a.pool);
    const pool = this.#newPool(a.pool, key, [member], a.device.size, a.device.vectors, a.device);
    this.#log?.info({ pool: a.pool, domain, hostUid: a.hostUid, size: pool.size, vectors: pool.vectors }, 'pool adopted');
    this.emit('pool-added', this.#info(pool));
  }

  #addPool(key: string): Pool {
    const domains = membersOf(key);
    const id = this.#nextId++;
    const members: PoolMember[] = domains.map((domain, i) => ({
      domain,
      peerId: i + 1,
      socketPath: path.join(ensureDomainDir(this.runtimeDir, domain), poolSocketName(id)),
    }));
    const pool = this.#newPool(id, key, members, this.config.poolSize, this.config.poolVectors);
    this.#log?.info({ pool: id, members: domains, size: pool.size, vectors: pool.vectors }, 'pool created');
    this.emit('pool-added', this.#info(pool));
    for (const m of members) {
      try {
        this.#announce?.(m.domain, this.#announcement(pool, m));
      } catch (err) {
        this.#log?.error({ err, pool: id, domain: m.domain }, 'announcing a pool failed');
      }
    }
    return pool;
  }

  #newPool(id: number, key: string, members: PoolMember[], size: number, vectors: number, adopt?: StoredDevice): Pool {
    const pool = new Pool({
      id,
      key,
      members,
      size,
      vectors,
      ...(adopt !== undefined ? { adopt } : {}),
      memberKeys: members.map((m) => this.#deviceKey?.(m.domain)),
      log: this.#log?.child({ pool: id }),
      hooks: {
        memberJoined: (p, m) => {
          this.emit('member-joined', m.domain, p.id);
          if (p.ready) this.#wakeWaiters(p.key);
        },
        memberLeft: (p, m) => {
          this.emit('member-left', m.domain, p.id);
        },
        capacityFreed: (p) => {
          this.#wakeWaiters(p.key);
        },
        finalized: (p) => {
          this.#pools.delete(p.id);
        },
      },
    });
    const set = this.#sets.get(key);
    if (set === undefined) this.#sets.set(key, [pool]);
    else set.push(pool);
    this.#pools.set(id, pool);
    return pool;
  }

  /** After an allocation: keep at least `lowWater` of the set's vectors and bytes free. */
  #aheadOfDemand(key: string): void {
    const lowWater = this.config.lowWater;
    if (lowWater <= 0) return;
    const set = this.#sets.get(key) ?? [];
    // A pool still waiting for a member will add its capacity when it attaches.
    if (set.some((p) => p.pending)) return;
    let vectors = 0;
    let freeVectors = 0;
    let bytes = 0;
    let freeBytes = 0;
    for (const p of set) {
      vectors += p.vectors;
      freeVectors += p.allocator.freeVectors;
      bytes += p.size;
      freeBytes += p.allocator.freeBytes;
    }
    if (freeVectors >= vectors * lowWater && freeBytes >= bytes * lowWater) return;
    const why = this.#cannotGrow(key);
    if (why !== null) {
      this.#log?.debug({ key, why }, 'pools running low but cannot grow');
      return;
    }
    try {
      this.#addPool(key);
    } catch (err) {
      this.#log?.error({ err, key }, 'cannot create a pool ahead of demand');
    }
  }

  #hasRoom(key: string, need: number, vector: boolean): boolean {
    return (this.#sets.get(key) ?? []).some((p) => p.ready && (!vector || p.allocator.freeVectors > 0) && p.allocator.largestFree >= need);
  }

  #wakeWaiters(key: string): void {
    for (const w of [...this.#waiters]) {
      if (w.key === key && this.#hasRoom(key, w.need, w.vector)) this.#settle(w, null);
    }
  }

  #settle(w: CapacityWaiter, err: Error | null): void {
    if (!this.#waiters.delete(w)) return;
    w.timer?.clear();
    if (err === null) w.resolve();
    else w.reject(err);
  }

  #retire(p: Pool, reason: string): void {
    if (!p.serving) return;
    p.retire(reason);
    this.emit('pool-removed', p.id);
  }

  #announcement(p: Pool, m: PoolMember): PoolAnnouncement {
    return {
      pool: p.id,
      peerId: m.peerId,
      vectors: p.vectors,
      size: p.size,
      socket: path.basename(m.socketPath),
      socketPath: m.socketPath,
    };
  }

  #info(p: Pool): PoolInfo {
    const hostUid = hostUidOf(p.key);
    return {
      pool: p.id,
      ...(hostUid === undefined ? {} : { hostUid }),
      members: p.members.map((m) => m.domain),
      joined: p.members.filter((m) => p.isJoined(m.domain)).map((m) => m.domain),
      state: p.state === 'closed' ? 'retired' : p.state,
      size: p.size,
      vectors: p.vectors,
      freeBytes: p.allocator.freeBytes,
      freeVectors: p.allocator.freeVectors,
      vchans: p.liveAllocations,
    };
  }
}

/** Bytes of the smallest vchan region, page-rounded. */
export const MIN_POOL_EXTENT = MIN_EXTENT;
