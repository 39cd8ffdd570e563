/**
 * The memory behind one shared-memory region (docs/shmem.md). Between host processes it is a
 * sealed memfd of its own (docs/ivshmem.md §5: no shrink, no grow — a truncated memfd would
 * SIGBUS a mapper), so nobody but the region's holders can ever map it; a region with a guest on
 * either side is an extent of a pool the two domains share (docs/shmem.md §6).
 */
import { native } from '../../native.js';
import { RegistryError } from '../registry/registry-error.js';
import type { Pool } from '../pools/pool.js';
import type { Extent } from '../pools/slot-allocator.js';

export interface RegionMemory {
  /** The fd a holder maps from; owned by the memory, closed by free(). */
  readonly fd: number;
  /** Where the region starts in `fd` (page aligned). */
  readonly offset: number;
  readonly length: number;
  /** The pool the region is carved from (what a guest is told), or undefined for a memfd. */
  readonly pool?: number;
  /**
   * The region is freed (docs/shmem.md §3). Idempotent. A host process that still maps a
   * memfd keeps its pages: the kernel frees them with the last fd and mapping.
   */
  free(): void;
}

export class MemfdRegionMemory implements RegionMemory {
  readonly fd: number;
  readonly offset = 0;
  readonly length: number;
  #freed = false;

  constructor(length: number) {
    this.length = length;
    try {
      // A fresh memfd reads as zeros and commits no page until one is touched.
      this.fd = native.memfdCreate('kvmchan-shm', length, true);
    } catch (err) {
      // The wire carries only an errno (wire-protocol.md §6.11: -ENOMEM); the log has the rest.
      throw new RegistryError('ENOMEM', `allocating a shared-memory region of ${length} bytes: ${(err as Error).message}`);
    }
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    native.close(this.fd);
  }
}

/**
 * An extent of a pool (docs/shmem.md §6): host holders map the pool memfd at the extent's
 * offset, guests their pool device. Freeing punches the extent's pages out of the memfd before
 * the allocator may hand it out again (docs/pools.md, "Freeing").
 */
export class PoolRegionMemory implements RegionMemory {
  readonly fd: number;
  readonly offset: number;
  readonly length: number;
  readonly pool: number;
  readonly #pool: Pool;
  readonly #extent: Extent;
  #freed = false;

  constructor(pool: Pool, extent: Extent) {
    this.#pool = pool;
    this.#extent = extent;
    this.pool = pool.id;
    this.fd = pool.memfd;
    this.offset = extent.offset;
    this.length = extent.length;
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#pool.freeExtent(this.#extent);
  }
}
