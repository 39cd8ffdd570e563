/**
 * Little-endian writer into an exactly sized buffer (wire-protocol.md §1). Every value is range
 * checked: an out-of-range number is the caller's bug (EncodeError), never silently wrapped.
 */
import { EncodeError } from './errors.js';

function checkUint(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new EncodeError(`${what} out of range: ${String(v)}`);
}

export class BufferWriter {
  readonly #buf: Buffer;
  #offset: number;

  /** A zero-filled buffer of `size` bytes: padding never carries stale memory. */
  constructor(size: number) {
    this.#buf = Buffer.alloc(size);
    this.#offset = 0;
  }

  get offset(): number {
    return this.#offset;
  }

  #room(n: number): number {
    const at = this.#offset;
    if (at + n > this.#buf.length) throw new EncodeError(`encoder overflow: ${n} bytes at ${at} of ${this.#buf.length}`);
    this.#offset = at + n;
    return at;
  }

  u8(v: number): this {
    checkUint(v, 0xff, 'u8');
    this.#buf[this.#room(1)] = v;
    return this;
  }

  u16(v: number): this {
    checkUint(v, 0xffff, 'u16');
    this.#buf.writeUInt16LE(v, this.#room(2));
    return this;
  }

  u32(v: number): this {
    checkUint(v, 0xffff_ffff, 'u32');
    this.#buf.writeUInt32LE(v, this.#room(4));
    return this;
  }

  s32(v: number): this {
    if (!Number.isInteger(v) || v < -0x8000_0000 || v > 0x7fff_ffff) throw new EncodeError(`s32 out of range: ${String(v)}`);
    this.#buf.writeInt32LE(v, this.#room(4));
    return this;
  }

  /** u64 from a number in [0, 2^53-1] (§1). */
  u64(v: number): this {
    checkUint(v, Number.MAX_SAFE_INTEGER, 'u64');
    const at = this.#room(8);
    this.#buf.writeUInt32LE(v % 0x1_0000_0000, at);
    this.#buf.writeUInt32LE(Math.floor(v / 0x1_0000_0000), at + 4);
    return this;
  }

  /** Skips `n` bytes, which stay zero. */
  zero(n: number): this {
    this.#room(n);
    return this;
  }

  bytes(b: Uint8Array): this {
    this.#buf.set(b, this.#room(b.length));
    return this;
  }

  /** The buffer; throws if fewer bytes were written than it was sized for. */
  finish(): Buffer {
    if (this.#offset !== this.#buf.length) {
      throw new EncodeError(`encoder underflow: wrote ${this.#offset} of ${this.#buf.length} bytes`);
    }
    return this.#buf;
  }
}
