// Shared fixtures for the ivshmem tests: temp dirs, memfds, waiting for events.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { EventEmitter } from 'node:events';
import { native } from '../../src/native.js';

export function tempDir(): { dir: string; sock: (name: string) => string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-ivshmem-'));
  return {
    dir,
    sock: (name) => path.join(dir, name),
    cleanup: () => {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A sealed memfd of `size` bytes; the caller closes it. */
export function memfd(size: number, seal = true): number {
  return native.memfdCreate('kvmchan-test', size, seal);
}

/** Resolve with the arguments of the next `event` (or reject after `ms`). */
export function nextEvent<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string, ms = 2000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`timed out waiting for '${event}'`));
    }, ms);
    const on = (...args: unknown[]): void => {
      clearTimeout(timer);
      resolve(args as T);
    };
    emitter.once(event, on);
  });
}

/** Read an eventfd's counter (null if zero). */
export function drain(fd: number): number | null {
  return native.eventfdRead(fd);
}
