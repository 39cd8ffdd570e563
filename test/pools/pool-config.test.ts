// The pool configuration sub-schema (src/daemon/pools/pool-config.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_POOL_CONFIG, poolConfigSchema } from '../../src/daemon/pools/pool-config.js';
import { PoolManager } from '../../src/daemon/pools/pool-manager.js';

const MiB = 1024 * 1024;

test('defaults: 64 MiB pools of 64 vectors, 25 % low water, 16 pools per domain, 8 per set', () => {
  assert.deepEqual(DEFAULT_POOL_CONFIG, { poolSize: 64 * MiB, poolVectors: 64, lowWater: 0.25, maxPoolsPerDomain: 16, maxPoolsPerSet: 8 });
  assert.deepEqual(poolConfigSchema.parse({ poolSize: MiB, poolVectors: 256, lowWater: 0, maxPoolsPerDomain: 1 }), {
    poolSize: MiB,
    poolVectors: 256,
    lowWater: 0,
    maxPoolsPerDomain: 1,
    maxPoolsPerSet: 8,
  });
  assert.equal(poolConfigSchema.parse({ poolSize: 1024 * MiB }).poolSize, 1024 * MiB);
});

test('refused: sizes that are not a power of two or out of range, vectors out of range, unknown keys', () => {
  for (const bad of [
    { poolSize: 3 * MiB },
    { poolSize: MiB + 4096 },
    { poolSize: MiB / 2 },
    { poolSize: 2048 * MiB },
    { poolVectors: 1 },
    { poolVectors: 257 },
    { poolVectors: 2.5 },
    { lowWater: 1 },
    { lowWater: -0.1 },
    { maxPoolsPerDomain: 0 },
    { poolsize: MiB },
  ]) {
    assert.equal(poolConfigSchema.safeParse(bad).success, false, JSON.stringify(bad));
  }
  assert.throws(() => new PoolManager({ runtimeDir: '/nonexistent', config: { poolSize: 3 * MiB } }), /power of two/);
});
