// Shared fixture for the pool tests: a PoolManager in a temp runtime dir, its
// announcements, simulated guests attached with SocketDevice (as QEMU would), and a
// leak check (fds, mappings) when everything is closed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { PoolManager, type PoolAnnouncement } from '../../src/daemon/pools/pool-manager.js';
import type { PoolConfig } from '../../src/daemon/pools/pool-config.js';
import { SocketDevice } from '../../src/ivshmem/socket-device.js';
import { native, READABLE } from '../../src/native.js';
import { RegistryError } from '../../src/daemon/registry/registry-error.js';

export const fdCount = (): number => fs.readdirSync('/proc/self/fd').length;

export interface Announced extends PoolAnnouncement {
  domain: number;
}

export interface Fixture {
  dir: string;
  pm: PoolManager;
  announced: Announced[];
  /** Announcements for `domain`, in order. */
  of(domain: number): Announced[];
  /** Attach a simulated guest to an announced pool, exactly as QEMU would. */
  join(a: PoolAnnouncement): Promise<SocketDevice>;
  /** Close guests and the manager, remove the dir, check nothing leaked. */
  close(): void;
  /** The same without the checks (for `finally`, so a failure is not masked). Idempotent. */
  dispose(): void;
}

export function fixture(config: Partial<PoolConfig> = {}): Fixture {
  const fds0 = fdCount();
  const maps0 = native.mappingCount();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-pools-'));
  const announced: Announced[] = [];
  const guests: SocketDevice[] = [];
  const pm = new PoolManager({
    runtimeDir: dir,
    config,
    announce: (domain, a) => announced.push({ domain, ...a }),
  });
  const dispose = (): void => {
    for (const g of guests) g.close();
    pm.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return {
    dir,
    pm,
    announced,
    of: (domain) => announced.filter((a) => a.domain === domain),
    join: async (a) => {
      const dev = await SocketDevice.connect(a.socketPath, { vectors: a.vectors, timeoutMs: 3000 });
      guests.push(dev);
      return dev;
    },
    dispose,
    close: () => {
      dispose();
      assert.equal(pm.poolCount, 0, 'every pool released');
      assert.equal(native.mappingCount(), maps0, 'no mapping leaked');
      assert.equal(fdCount(), fds0, 'no fd leaked');
    },
  };
}

/** The RegistryError code a call throws (fails if it does not throw one). */
export function errnoOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
    return err.errnoName;
  }
  assert.fail('expected a RegistryError');
}

export async function rejectsWith(p: Promise<unknown>, errnoName: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof RegistryError && err.errnoName === errnoName);
}

/** Resolve with the counter once `fd` (an eventfd) becomes readable. */
export function readable(fd: number, ms = 2000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      p.close();
      reject(new Error('eventfd never became readable'));
    }, ms);
    const p = new native.Poller(fd, () => {
      clearTimeout(timer);
      p.close();
      resolve(native.eventfdRead(fd) ?? 0);
    });
    p.start(READABLE);
  });
}

export const pageRound = (n: number): number => Math.ceil(n / 4096) * 4096;
