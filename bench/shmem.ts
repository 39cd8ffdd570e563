/**
 * Shared-memory regions (docs/shmem.md) in `npm run bench`: share + map of a 32 MiB region
 * under one id, against the same 32 MiB shared one 4 KiB page per id (what per-page references
 * cost), and against the plain baseline of one memfd_create + two mmap()s in one process, all
 * in the same run. Each sample is wall time from the share request to both sides mapped; the
 * release and unmapping after it are not counted.
 */
import { Shmem } from '../src/client/index.js';
import { native } from '../src/native.js';
import type { Watchdog } from './watchdog.js';

const REGION = 32 * 1024 * 1024;
const PAGES = REGION / 4096;

export interface ShmemFigures {
  /** Milliseconds per sample, sorted. */
  region: number[];
  perPage: number[];
  memfd: number[];
  reps: number;
}

const sorted = (a: number[]): number[] => a.sort((x, y) => x - y);
const now = (): bigint => process.hrtime.bigint();
const ms = (t0: bigint): number => Number(now() - t0) / 1e6;

export async function shmemBench(runtimeDir: string, reps: number, perPageReps: number, dog: Watchdog): Promise<ShmemFigures> {
  const creator = await Shmem.open({ runtimeDir });
  const mapper = await Shmem.open({ runtimeDir });
  const region: number[] = [];
  const perPage: number[] = [];
  const memfd: number[] = [];
  try {
    for (let i = -3; i < reps; i++) {
      dog.waiting(`region share + map ${i}`);
      const t0 = now();
      const r = await creator.share(0, PAGES);
      const m = await mapper.map(0, r.id);
      if (i >= 0) region.push(ms(t0));
      await creator.release(r.id);
      await mapper.unmap(m);
      await creator.unmap(r);
      dog.progress();
    }
    for (let i = -1; i < perPageReps; i++) {
      dog.waiting(`per-page share + map ${i}`);
      const t0 = now();
      const pages = [];
      for (let p = 0; p < PAGES; p++) {
        const r = await creator.share(0, 1);
        pages.push([r, await mapper.map(0, r.id)] as const);
        // A per-page sample is 16,384 round trips: seconds, a minute under load. Each one is
        // progress, so the watchdog tells a slow sample from a stuck one.
        dog.progress();
      }
      if (i >= 0) perPage.push(ms(t0));
      for (const [r, m] of pages) {
        await creator.release(r.id);
        await mapper.unmap(m);
        await creator.unmap(r);
        dog.progress();
      }
    }
    for (let i = -3; i < reps; i++) {
      const t0 = now();
      const fd = native.memfdCreate('kvmchan-bench', REGION, true);
      const a = native.mmap(fd, REGION, 0, true);
      const b = native.mmap(fd, REGION, 0, true);
      if (i >= 0) memfd.push(ms(t0));
      native.munmap(a);
      native.munmap(b);
      native.close(fd);
    }
  } finally {
    mapper.close();
    creator.close();
  }
  return { region: sorted(region), perPage: sorted(perPage), memfd: sorted(memfd), reps };
}
