/**
 * Bounds-checked mmap bookkeeping shared by the Device implementations:
 * every mapping a handle made is unmapped when the handle closes, so a closed device never
 * leaves shared memory mapped behind it (docs/testing.md: zero leaked mappings).
 */
import { InvalidArgumentError, fromSystemError } from '../errors.js';
import { native } from '../native.js';

/** mmap offsets must be page aligned; x86-64 (the only target with ivshmem here) uses 4 KiB. */
export const PAGE_SIZE = 4096;

export class MappingSet {
  readonly #fd: number;
  readonly #size: number;
  readonly #base: number;
  readonly #maps = new Set<ArrayBuffer>();

  /** `base`: where the shared memory starts in `fd` (a VFIO region offset; 0 for a memfd). */
  constructor(fd: number, size: number, base = 0) {
    this.#fd = fd;
    this.#size = size;
    this.#base = base;
  }

  get count(): number {
    return this.#maps.size;
  }

  map(offset = 0, length?: number, writable = true): ArrayBuffer {
    const len = length ?? this.#size - offset;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) {
      throw new InvalidArgumentError(`map: offset ${offset} must be a non-negative multiple of ${PAGE_SIZE}`);
    }
    if (!Number.isSafeInteger(len) || len <= 0 || offset + len > this.#size) {
      throw new InvalidArgumentError(`map: range [${offset}, ${offset}+${len}) outside shared memory of ${this.#size} bytes`);
    }
    let buf: ArrayBuffer;
    try {
      buf = native.mmap(this.#fd, len, this.#base + offset, writable);
    } catch (err) {
      throw fromSystemError(err, 'map: mmap of ivshmem shared memory failed');
    }
    this.#maps.add(buf);
    return buf;
  }

  unmap(buf: ArrayBuffer): void {
    if (!this.#maps.delete(buf)) throw new InvalidArgumentError('unmap: buffer was not mapped by this device');
    native.munmap(buf);
  }

  unmapAll(): void {
    for (const buf of this.#maps) native.munmap(buf);
    this.#maps.clear();
  }
}
