/**
 * Carves vchan regions and interrupt vectors out of a pool device (architecture.md
 * rule 2): first-fit over page-aligned extents, a bitmap of vectors. Freed space
 * is wiped by the pool before it returns here.
 */
import { InvalidArgumentError } from '../../errors.js';

export const PAGE = 4096;

export interface Extent {
  offset: number;
  length: number;
}

export class SlotAllocator {
  readonly size: number;
  readonly vectors: number;
  /** Free extents, sorted by offset, coalesced. */
  #free: Extent[];
  #freeBytes: number;
  readonly #vectorUsed: Uint8Array;
  readonly #firstVector: number;
  #vectorsFree: number;

  /** @param firstVector vectors below this are reserved (e.g. for the device's own use) */
  constructor(size: number, vectors: number, firstVector = 0) {
    if (size % PAGE !== 0 || size <= 0) throw new InvalidArgumentError(`pool size ${size} is not a positive multiple of ${PAGE}`);
    this.size = size;
    this.vectors = vectors;
    this.#free = [{ offset: 0, length: size }];
    this.#freeBytes = size;
    this.#vectorUsed = new Uint8Array(vectors);
    this.#firstVector = firstVector;
    for (let v = 0; v < firstVector && v < vectors; v++) this.#vectorUsed[v] = 1;
    this.#vectorsFree = Math.max(0, vectors - firstVector);
  }

  get freeBytes(): number {
    return this.#freeBytes;
  }

  get freeVectors(): number {
    return this.#vectorsFree;
  }

  /** Largest single extent available (what one allocation can get). */
  get largestFree(): number {
    let m = 0;
    for (const e of this.#free) m = Math.max(m, e.length);
    return m;
  }

  /** A page-aligned extent of at least `length` bytes, or null if none fits. */
  allocExtent(length: number): Extent | null {
    const want = Math.ceil(length / PAGE) * PAGE;
    for (let i = 0; i < this.#free.length; i++) {
      const e = this.#free[i]!;
      if (e.length < want) continue;
      const got = { offset: e.offset, length: want };
      if (e.length === want) this.#free.splice(i, 1);
      else this.#free[i] = { offset: e.offset + want, length: e.length - want };
      this.#freeBytes -= want;
      return got;
    }
    return null;
  }

  freeExtent(x: Extent): void {
    if (x.offset % PAGE !== 0 || x.length % PAGE !== 0 || x.offset + x.length > this.size) {
      throw new InvalidArgumentError(`bad extent ${x.offset}+${x.length}`);
    }
    let i = 0;
    while (i < this.#free.length && this.#free[i]!.offset < x.offset) i++;
    const prev = this.#free[i - 1];
    const next = this.#free[i];
    if ((prev !== undefined && prev.offset + prev.length > x.offset) || (next !== undefined && x.offset + x.length > next.offset)) {
      throw new InvalidArgumentError(`double free of extent ${x.offset}+${x.length}`);
    }
    this.#free.splice(i, 0, { ...x });
    this.#freeBytes += x.length;
    // Coalesce with neighbours.
    if (i + 1 < this.#free.length && this.#free[i]!.offset + this.#free[i]!.length === this.#free[i + 1]!.offset) {
      this.#free[i]!.length += this.#free[i + 1]!.length;
      this.#free.splice(i + 1, 1);
    }
    if (i > 0 && this.#free[i - 1]!.offset + this.#free[i - 1]!.length === this.#free[i]!.offset) {
      this.#free[i - 1]!.length += this.#free[i]!.length;
      this.#free.splice(i, 1);
    }
  }

  allocVector(): number | null {
    if (this.#vectorsFree === 0) return null;
    const v = this.#vectorUsed.indexOf(0);
    this.#vectorUsed[v] = 1;
    this.#vectorsFree--;
    return v;
  }

  freeVector(v: number): void {
    if (!Number.isInteger(v) || v < this.#firstVector || v >= this.vectors || this.#vectorUsed[v] === 0) {
      throw new InvalidArgumentError(`vector ${v} is not allocated`);
    }
    this.#vectorUsed[v] = 0;
    this.#vectorsFree++;
  }
}
