/**
 * Bounds-checked little-endian reader over one payload (wire-protocol.md §1). Running past the
 * end is a payload fault (BAD_LENGTH), never a RangeError: a peer chooses the bytes.
 */
import { PayloadError, WireErrorCode } from './errors.js';

export class BufferReader {
  readonly #buf: Buffer;
  readonly #end: number;
  #offset: number;

  constructor(buf: Buffer, offset = 0, end = buf.length) {
    this.#buf = buf;
    this.#offset = offset;
    this.#end = end;
  }

  get offset(): number {
    return this.#offset;
  }

  get remaining(): number {
    return this.#end - this.#offset;
  }

  /** Throws BAD_LENGTH unless `n` more bytes are available. */
  need(n: number, what: string): void {
    if (n > this.#end - this.#offset) {
      throw new PayloadError(
        WireErrorCode.BAD_LENGTH,
        `payload too short: ${what} needs ${n} bytes at offset ${this.#offset}, ${this.#end - this.#offset} left`,
      );
    }
  }

  /** Throws BAD_LENGTH if bytes are left over after the last field. */
  expectEnd(what: string): void {
    if (this.#offset !== this.#end) {
      throw new PayloadError(WireErrorCode.BAD_LENGTH, `${this.#end - this.#offset} unexpected bytes after ${what}`);
    }
  }

  u8(): number {
    this.need(1, 'u8');
    return this.#buf[this.#offset++]!;
  }

  u16(): number {
    this.need(2, 'u16');
    const v = this.#buf.readUInt16LE(this.#offset);
    this.#offset += 2;
    return v;
  }

  u32(): number {
    this.need(4, 'u32');
    const v = this.#buf.readUInt32LE(this.#offset);
    this.#offset += 4;
    return v;
  }

  s32(): number {
    this.need(4, 's32');
    const v = this.#buf.readInt32LE(this.#offset);
    this.#offset += 4;
    return v;
  }

  /** A u64 as a number; values above 2^53-1 are a BAD_RANGE fault (§1). */
  u64(): number {
    this.need(8, 'u64');
    const lo = this.#buf.readUInt32LE(this.#offset);
    const hi = this.#buf.readUInt32LE(this.#offset + 4);
    if (hi > 0x1fffff) {
      throw new PayloadError(WireErrorCode.BAD_RANGE, `u64 at offset ${this.#offset} exceeds 2^53-1`);
    }
    this.#offset += 8;
    return hi * 0x1_0000_0000 + lo;
  }

  /** A view (not a copy) of the next `n` bytes. */
  bytes(n: number): Buffer {
    this.need(n, `${n}-byte field`);
    const v = this.#buf.subarray(this.#offset, this.#offset + n);
    this.#offset += n;
    return v;
  }
}
