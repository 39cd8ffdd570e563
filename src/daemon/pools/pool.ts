/**
 * One pool (architecture.md rule 2, docs/pools.md): an ivshmem-doorbell device — a
 * sealed memfd and `vectors` interrupt vectors per peer — that carries many
 * vchans. The host is peer 0; each member guest has its own fixed-id socket in
 * its own device directory (peer 1, and peer 2 for the second guest of a pair
 * pool), so which guest is which comes from the socket QEMU was given (rule 4).
 *
 * The host maps the whole pool once, with its own mmap of the memfd rather than
 * through the device's host peer: the mapping must outlive the device, because a
 * pool whose guest is gone is retired (device closed, sockets removed) while
 * host processes may still hold vchans in it — the registry reads their control
 * pages until the last of them is released; only then is the memory unmapped.
 */
import type { Logger } from 'pino';
import { IvshmemServer, type PeerInfo } from '../../ivshmem/server.js';
import type { HostDevice } from '../../ivshmem/host-device.js';
import { native } from '../../native.js';
import { KvmchanError, fromSystemError } from '../../errors.js';
import { SlotAllocator, type Extent } from './slot-allocator.js';
import type { PoolStateName } from '../../protocol/constants.js';
import { DEVICE_HEADER_PAGE, encodePoolHeader, headerOffset } from '../../ivshmem/device-header.js';
import type { StoredDevice } from '../vmm/device-fds.js';

export interface PoolMember {
  /** Guest domain id. */
  readonly domain: number;
  /** Its IVPosition on this pool: 1, or 2 for the higher domain of a pair pool. */
  readonly peerId: number;
  /** Its socket, inside its own domain directory. */
  readonly socketPath: string;
}

/**
 * A pool's state, in the words `kvmchan status` and LIST_POOLS use (docs/pools.md §5):
 * `pending` (serving; a member has not attached, yet or again), `ready` (serving; every member
 * attached), `retired` (no new vchans; goes away with its last one), `closed` (memory released).
 */
export type PoolState = PoolStateName | 'closed';

export interface PoolHooks {
  memberJoined(pool: Pool, member: PoolMember): void;
  memberLeft(pool: Pool, member: PoolMember, reason: string): void;
  /** Space or a vector was returned to the allocator. */
  capacityFreed(pool: Pool): void;
  /** A retired pool's last vchan was released and its memory is gone. */
  finalized(pool: Pool): void;
}

export interface PoolOptions {
  id: number;
  key: string;
  members: readonly PoolMember[];
  size: number;
  vectors: number;
  hooks: PoolHooks;
  /** Device key of each member (same order as `members`), for the device header's tags. */
  memberKeys?: readonly (Uint8Array | undefined)[];
  /**
   * Rebuild the pool from a restarted daemon's stored fds (vmm/device-fds.ts): the members'
   * QEMUs still hold this memory and these eventfds, and count as attached at once. Taken over
   * (closed on error); its size and vectors must be `size` and `vectors`.
   */
  adopt?: StoredDevice;
  log?: Logger | undefined;
}

export class Pool {
  readonly id: number;
  /** The pool set it belongs to: a guest and a host uid ("5@1000") or a pair ("3:7"). */
  readonly key: string;
  readonly members: readonly PoolMember[];
  readonly size: number;
  readonly vectors: number;
  readonly allocator: SlotAllocator;
  /** The pool memfd: host endpoints get it (docs/pools.md §4 on what that allows). */
  readonly memfd: number;
  readonly #device: IvshmemServer;
  readonly #host: HostDevice;
  #mapping: ArrayBuffer | null;
  readonly #hooks: PoolHooks;
  readonly #log: Logger | undefined;
  readonly #joined = new Set<number>();
  /** Live allocations (extent + vector), so retirement knows when the memory is free. */
  #live = 0;
  /** Live shared-memory region extents (no vector, docs/shmem.md §6); they keep the memory too. */
  #liveRegions = 0;
  /** Set once the pool stops serving; until then it is pending or ready. */
  #end: 'retired' | 'closed' | null = null;

  constructor(opts: PoolOptions) {
    this.id = opts.id;
    this.key = opts.key;
    this.members = opts.members;
    this.size = opts.size;
    this.vectors = opts.vectors;
    this.#hooks = opts.hooks;
    this.#log = opts.log;
    // Every vector carries vchans; nothing pool-wide needs one (pool events go over
    // the guest link). The last page is the device header (docs/ivshmem.md §9).
    this.allocator = new SlotAllocator(opts.size - DEVICE_HEADER_PAGE, opts.vectors, 0);
    let memfd = -1;
    let mapping: ArrayBuffer | null = null;
    let device: IvshmemServer | null = null;
    const adopt = opts.adopt;
    const adoptedPeers = new Set<number>();
    try {
      if (adopt !== undefined) {
        memfd = adopt.shm;
        if (adopt.size !== opts.size || adopt.vectors !== opts.vectors)
          throw new KvmchanError(`stored pool ${opts.id} is not ${opts.size} bytes × ${opts.vectors} vectors`, 'KVMCHAN_E_VMM_STALE');
        // Nothing survives a session (docs/pools.md §5, "Adopted pools"): what the earlier daemon's vchans left is wiped.
        native.punchHole(memfd, 0, opts.size - DEVICE_HEADER_PAGE);
      } else {
        // Sealed: a shrunk memfd would fault QEMU (docs/ivshmem.md §5). Pages are allocated on first touch.
        memfd = native.memfdCreate(`kvmchan-pool-${opts.id}`, opts.size, true);
      }
      mapping = native.mmap(memfd, opts.size, 0, true);
      // Written before any guest can attach: how a guest on a PCI bus recognises this pool.
      const keys = opts.members.map((_, i) => opts.memberKeys?.[i]);
      new Uint8Array(mapping).set(encodePoolHeader(opts.id, opts.size, opts.vectors, keys), headerOffset(opts.size));
      device = new IvshmemServer({
        // The primary socket is never listened on: every member has its own fixed-id socket.
        socketPath: opts.members[0]!.socketPath,
        shmFd: memfd,
        shmSize: opts.size,
        vectors: opts.vectors,
        hostPeer: true,
        maxClients: opts.members.length,
        // Each member's socket sits in its own domain directory, the gate (vmm/domain-dir.ts).
        socketMode: 0o660,
        ...(adopt !== undefined ? { hostEventfds: adopt.peers.get(0)! } : {}),
        ...(opts.log !== undefined ? { log: opts.log } : {}),
        authorize: ({ cred, socketPath, peerId }) => {
          this.#log?.info({ pool: opts.id, peerId, socketPath, peerPid: cred?.pid, uid: cred?.uid }, 'guest attaching to pool');
          return true;
        },
      });
      for (const m of opts.members) device.addSocket(m.socketPath, m.peerId);
    } catch (err) {
      device?.close();
      if (mapping !== null) native.munmap(mapping);
      if (memfd >= 0) native.close(memfd);
      if (adopt !== undefined) {
        for (const [peer, fds] of adopt.peers)
          if ((peer === 0 && device === null) || (peer !== 0 && !adoptedPeers.has(peer))) for (const fd of fds) native.close(fd);
      }
      throw err instanceof KvmchanError ? err : fromSystemError(err, `creating pool ${opts.id}`);
    }
    this.memfd = memfd;
    this.#mapping = mapping;
    this.#device = device;
    this.#host = device.host!;
    device.on('peer-join', (info) => {
      this.#onJoin(info);
    });
    device.on('peer-leave', (info, reason) => {
      this.#onLeave(info, reason);
    });
    if (adopt !== undefined) {
      for (const m of opts.members) {
        const fds = adopt.peers.get(m.peerId);
        if (fds !== undefined) device.adoptPeer(m.peerId, fds);
      }
      for (const [peer, fds] of adopt.peers)
        if (peer !== 0 && !opts.members.some((m) => m.peerId === peer)) for (const fd of fds) native.close(fd);
    }
  }

  get state(): PoolState {
    return this.#end ?? (this.#joined.size === this.members.length ? 'ready' : 'pending');
  }

  /** Pending or ready: not retired. */
  get serving(): boolean {
    return this.#end === null;
  }

  /** Every member attached: vchans may be carved out of it. */
  get ready(): boolean {
    return this.state === 'ready';
  }

  /** Waiting for at least one member to attach (first time or after it left). */
  get pending(): boolean {
    return this.state === 'pending';
  }

  /** Live vchans (extent + vector). */
  get liveAllocations(): number {
    return this.#live;
  }

  /** Live shared-memory regions (extent only). */
  get liveRegions(): number {
    return this.#liveRegions;
  }

  isJoined(domain: number): boolean {
    const m = this.memberOf(domain);
    return m !== undefined && this.#joined.has(m.peerId);
  }

  memberOf(domain: number): PoolMember | undefined {
    return this.members.find((m) => m.domain === domain);
  }

  /** The host's own peer on the device (interrupt eventfds, doorbells). Throws once retired. */
  get host(): HostDevice {
    return this.#host;
  }

  /** The device (tests and status); do not close it directly. */
  get device(): IvshmemServer {
    return this.#device;
  }

  /** The host's mapping of the whole pool, or null once closed. */
  get mapping(): ArrayBuffer | null {
    return this.#mapping;
  }

  /** Carve an extent and a vector, or null if this pool cannot hold `length` bytes now. */
  allocate(length: number): { extent: Extent; vector: number } | null {
    if (!this.ready) return null;
    if (this.allocator.freeVectors === 0 || this.allocator.largestFree < length) return null;
    const vector = this.allocator.allocVector();
    if (vector === null) return null;
    const extent = this.allocator.allocExtent(length);
    if (extent === null) {
      this.allocator.freeVector(vector);
      return null;
    }
    this.#live++;
    return { extent, vector };
  }

  /**
   * Carve an extent without a vector, for a shared-memory region (docs/shmem.md §6: a region
   * needs no doorbell), or null if this pool cannot hold `length` bytes now.
   */
  allocateExtent(length: number): Extent | null {
    if (!this.ready || this.allocator.largestFree < length) return null;
    const extent = this.allocator.allocExtent(length);
    if (extent !== null) this.#liveRegions++;
    return extent;
  }

  /** Return a region's extent: wiped (hole punched) first, like a vchan's (free() below). */
  freeExtent(extent: Extent): void {
    this.#wipe(extent);
    this.allocator.freeExtent(extent);
    this.#liveRegions--;
    this.#afterFree();
  }

  /**
   * Return an allocation: the extent is wiped first (what a vchan carried must never be
   * visible to the next one, nor linger for the pool's peers), then both go back. The wipe
   * punches a hole (docs/pools.md, "Freeing"): the range reads as zeros and its memory goes
   * back to the system, instead of every page being touched (and committed) to write zeros.
   */
  free(extent: Extent, vector: number): void {
    this.#wipe(extent);
    if (this.serving) this.#drainVector(vector);
    this.allocator.freeExtent(extent);
    this.allocator.freeVector(vector);
    this.#live--;
    this.#afterFree();
  }

  #afterFree(): void {
    if (this.#end === 'retired' && this.#live === 0 && this.#liveRegions === 0) this.#finalize();
    else if (this.serving) this.#hooks.capacityFreed(this);
  }

  #wipe(extent: Extent): void {
    if (this.memfd < 0) return;
    try {
      native.punchHole(this.memfd, extent.offset, extent.length);
    } catch {
      // A filesystem without hole punching: zero by hand (still never visible to the next).
      if (this.#mapping !== null) new Uint8Array(this.#mapping, extent.offset, extent.length).fill(0);
    }
  }

  /**
   * Empty every peer's eventfd of `vector` (docs/pools.md §3): a kick the old vchan left
   * pending must not wake the next vchan on this vector. Nobody waits on a free vector, so
   * nothing is stolen.
   */
  #drainVector(vector: number): void {
    const host = this.#device.host;
    if (host === null) return;
    native.eventfdRead(host.interruptFd(vector));
    for (const m of this.members) {
      const fd = host.doorbellFd(m.peerId, vector);
      if (fd !== null) native.eventfdRead(fd);
    }
  }

  /**
   * Stop serving: sockets removed, guests disconnected, eventfds closed. The memory stays
   * mapped until the last live allocation is freed (host processes may still use it).
   */
  retire(reason: string): void {
    if (!this.serving) return;
    this.#end = 'retired';
    this.#joined.clear();
    this.#device.close();
    this.#log?.info({ pool: this.id, reason, live: this.#live, regions: this.#liveRegions }, 'pool retired');
    if (this.#live === 0 && this.#liveRegions === 0) this.#finalize();
  }

  #finalize(): void {
    if (this.#end === 'closed') return;
    this.#end = 'closed';
    if (this.#mapping !== null) native.munmap(this.#mapping);
    this.#mapping = null;
    native.close(this.memfd);
    this.#log?.debug({ pool: this.id }, 'pool memory released');
    this.#hooks.finalized(this);
  }

  #onJoin(info: PeerInfo): void {
    const m = this.members.find((x) => x.peerId === info.id);
    if (m === undefined || !this.serving) return;
    this.#joined.add(m.peerId);
    this.#log?.info({ pool: this.id, domain: m.domain, peerId: m.peerId, ready: this.ready }, 'pool member attached');
    this.#hooks.memberJoined(this, m);
  }

  #onLeave(info: PeerInfo, reason: string): void {
    const m = this.members.find((x) => x.peerId === info.id);
    if (m === undefined || !this.serving) return;
    if (!this.#joined.delete(m.peerId)) return;
    this.#log?.warn({ pool: this.id, domain: m.domain, peerId: m.peerId, reason }, 'pool member left');
    this.#hooks.memberLeft(this, m, reason);
  }
}
