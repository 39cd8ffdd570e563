/**
 * One vchan carved out of a pool (docs/pools.md §3): a page-aligned extent for its
 * region and ONE vector index v. Every peer of the pool waits on its own vector v;
 * kicking the other side means ringing the other peer's vector v. So:
 *  - a host process gets fds: the pool memfd (mapped at shmOffset), the host peer's
 *    interrupt eventfd v to wait on, and the guest peer's eventfd v to ring;
 *  - a guest gets coordinates on a pool device it is attached to:
 *    (pool, vector v, peer = the other side's IVPosition, peer vector v).
 */
import { native } from '../../native.js';
import { HEADER_SIZE, initializeRegion, regionLength, type RingGeometry } from '../../ring/layout.js';
import type { VchanResources, EndpointAccess } from '../registry/vchan-resources.js';
import { RegistryError } from '../registry/registry-error.js';
import type { Pool } from './pool.js';
import type { Extent } from './slot-allocator.js';

const HOST_DOMAIN = 0;
const HOST_PEER = 0;

export class PoolResources implements VchanResources {
  readonly geometry: RingGeometry;
  readonly shmOffset: number;
  readonly shmLength: number;
  readonly control: Int32Array;
  readonly server: EndpointAccess;
  readonly client: EndpointAccess;
  readonly serverDomain: number;
  readonly clientDomain: number;
  /** The pool this vchan lives in (to find the vchans hit by a member leaving). */
  readonly poolId: number;
  readonly vector: number;
  readonly extent: Extent;
  readonly #pool: Pool;
  /** Duplicated doorbell fds handed to host processes; ours to close. */
  readonly #owned: number[] = [];
  #released = false;

  /** Takes ownership of `extent` and `vector` (freed on error and by release()). */
  constructor(pool: Pool, extent: Extent, vector: number, geometry: RingGeometry, serverDomain: number, clientDomain: number) {
    this.#pool = pool;
    this.poolId = pool.id;
    this.extent = extent;
    this.vector = vector;
    this.geometry = geometry;
    this.serverDomain = serverDomain;
    this.clientDomain = clientDomain;
    this.shmOffset = extent.offset;
    this.shmLength = regionLength(geometry);
    try {
      const mapping = pool.mapping;
      if (mapping === null) throw new RegistryError('EIO', `pool ${pool.id} has no memory`);
      initializeRegion(mapping, extent.offset, geometry);
      this.control = new Int32Array(mapping, extent.offset, HEADER_SIZE / 4);
      this.server = this.#endpoint(serverDomain, clientDomain);
      this.client = this.#endpoint(clientDomain, serverDomain);
    } catch (err) {
      for (const fd of this.#owned) native.close(fd);
      this.#owned.length = 0;
      pool.free(extent, vector);
      throw err;
    }
  }

  #peerOf(domain: number): number {
    if (domain === HOST_DOMAIN) return HOST_PEER;
    const m = this.#pool.memberOf(domain);
    if (m === undefined) throw new RegistryError('EIO', `domain ${domain} is not a member of pool ${this.#pool.id}`);
    return m.peerId;
  }

  #endpoint(domain: number, other: number): EndpointAccess {
    const v = this.vector;
    if (domain !== HOST_DOMAIN) {
      return { kind: 'device', pool: this.#pool.id, vector: v, peerId: this.#peerOf(other), peerVector: v };
    }
    const host = this.#pool.host;
    const ring = host.doorbellFd(this.#peerOf(other), v);
    if (ring === null) throw new RegistryError('EAGAIN', `pool ${this.#pool.id}: domain ${other} is not attached`);
    // The server closes a peer's eventfds when it leaves and makes new ones when it comes
    // back; a grant handed out later (a host client attaching to a guest's server) must
    // never carry a number that has meanwhile been closed and reused. Our own dup is stable.
    const kick = native.dup(ring);
    this.#owned.push(kick);
    return { kind: 'fds', shm: this.#pool.memfd, wait: host.interruptFd(v), kick };
  }

  #kick(domain: number): void {
    if (this.#released || !this.#pool.serving) return;
    if (domain === HOST_DOMAIN) native.eventfdWrite(this.#pool.host.interruptFd(this.vector), 1);
    else this.#pool.host.doorbell(this.#peerOf(domain), this.vector);
  }

  kickServer(): void {
    this.#kick(this.serverDomain);
  }

  kickClient(): void {
    this.#kick(this.clientDomain);
  }

  /** The pool's fds are the pool's, and the doorbell dups are released with the vchan. */
  handedOver(): void {}

  get released(): boolean {
    return this.#released;
  }

  /** Close our duplicated fds, wipe the extent and give it and the vector back. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    for (const fd of this.#owned) native.close(fd);
    this.#owned.length = 0;
    this.#pool.free(this.extent, this.vector);
  }
}
