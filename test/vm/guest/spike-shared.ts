/** Shared by the VFIO spike's guest script and its host test (test/vm/vfio-spike.test.ts). */
import { native, READABLE, type Poller } from '../../../src/native.js';

/** Bytes of pattern each side writes. */
export const PATTERN_BYTES = 1 << 20;
/** The guest writes at 0; the host writes here for the guest to check. */
export const HOST_PATTERN_OFFSET = 2 << 20;
/** Seed of the host's pattern (the guest's seed is its IVPosition). */
export const HOST_PATTERN_SEED = 0xa5;

/** Byte i of the pattern `seed`. */
export function patternByte(seed: number, i: number): number {
  return ((Math.imul(i, 2654435761) >>> 24) ^ seed ^ i) & 0xff;
}

/** Resolves on the next READABLE of an eventfd, with the counter it read. */
export class EventfdWaiter {
  readonly fd: number;
  readonly #poller: Poller;
  #waiters: ((n: number) => void)[] = [];
  #pending = 0;
  total = 0;

  constructor(fd: number) {
    this.fd = fd;
    this.#poller = new native.Poller(fd, (err) => {
      if (err !== null) throw err;
      const n = native.eventfdRead(fd);
      if (n === null) return;
      this.total += n;
      const w = this.#waiters.shift();
      if (w !== undefined) w(n);
      else this.#pending += n;
    });
    this.#poller.start(READABLE);
  }

  next(): Promise<number> {
    if (this.#pending > 0) {
      const n = this.#pending;
      this.#pending = 0;
      return Promise.resolve(n);
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  close(): void {
    this.#poller.close();
  }
}
