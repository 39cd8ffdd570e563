/**
 * Pool sizing (docs/pools.md §2), as a zod sub-schema the daemon configuration
 * embeds under `pools`. Untrusted input like the rest of the config: every
 * field checked, unknown keys refused.
 */
import { z } from 'zod';
import { isPowerOfTwo, MAX_VECTORS } from '../../ivshmem/protocol.js';

export const MiB = 1024 * 1024;
export const MIN_POOL_SIZE = 1 * MiB;
export const MAX_POOL_SIZE = 1024 * MiB;
export const MIN_POOL_VECTORS = 2;
export const MAX_POOL_VECTORS = MAX_VECTORS;

export const poolConfigSchema = z
  .object({
    /**
     * Bytes of shared memory per pool device. A power of two (QEMU aborts the VM
     * otherwise, docs/ivshmem.md §3); memfd pages are only allocated when touched, so a
     * large pool costs address space, not RAM, until vchans use it.
     */
    poolSize: z
      .number()
      .int()
      .min(MIN_POOL_SIZE)
      .max(MAX_POOL_SIZE)
      .refine(isPowerOfTwo, { message: 'poolSize must be a power of two' })
      .default(64 * MiB),
    /** Interrupt vectors per peer of a pool = most vchans one pool can carry. */
    poolVectors: z.number().int().min(MIN_POOL_VECTORS).max(MAX_POOL_VECTORS).default(64),
    /**
     * Ahead-of-demand threshold: after an allocation, when the pools of that
     * domain (or pair) have less than this fraction of their vectors or bytes
     * free, another pool is created at once. 0 disables (pools then appear only
     * when a request finds none with room, and that request waits for it).
     */
    lowWater: z.number().min(0).lt(1).default(0.25),
    /** Most pools any one guest is a member of (its host pools plus its pair pools). */
    maxPoolsPerDomain: z.number().int().min(1).max(256).default(16),
    /**
     * Most pools one set has (a guest's host pools, or one guest pair's pools). Keeps
     * ahead-of-demand growth of one set from using up a guest's whole maxPoolsPerDomain
     * budget, so its other sets can still grow (docs/pools.md §4).
     */
    maxPoolsPerSet: z.number().int().min(1).max(256).default(8),
  })
  .strict();

export type PoolConfig = z.infer<typeof poolConfigSchema>;

export const DEFAULT_POOL_CONFIG: PoolConfig = poolConfigSchema.parse({});
