/**
 * Incremental frame decoder for the stream transport (docs/wire-protocol.md §3.2): frames lie
 * back to back in a byte stream that arrives in arbitrary pieces. Work is linear in the bytes
 * pushed whatever the chunking; an oversize `size` is rejected as soon as the header is
 * complete, before any payload is buffered.
 */
import { HEADER_SIZE, MAX_PAYLOAD } from './constants.js';
import { FramingError, type WireError, WireErrorCode } from './errors.js';
import { decodeFrameHeader, type FrameHeader } from './frame.js';
import type { Frame } from './types.js';

const NO_FDS: readonly number[] = Object.freeze([]);

export interface FrameDecoderOptions {
  readonly maxPayload?: number;
}

export class FrameDecoder {
  readonly #maxPayload: number;
  /** Header bytes gathered so far when a header straddles chunks. */
  readonly #headerBuf = Buffer.alloc(HEADER_SIZE);
  #headerFill = 0;
  /** Header of the frame whose payload is being gathered. */
  #header: FrameHeader | undefined;
  #payload: Buffer | undefined;
  #payloadFill = 0;
  #error: WireError | undefined;

  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = options.maxPayload ?? MAX_PAYLOAD;
  }

  /** Bytes of an incomplete frame held back. */
  get buffered(): number {
    return this.#header ? HEADER_SIZE + this.#payloadFill : this.#headerFill;
  }

  /**
   * Consumes `chunk` and returns the frames it completed, in order. Throws a FramingError on an
   * oversize header; the decoder is then dead and every later call throws the same error (frames
   * completed earlier in the failing chunk are dropped: the connection is closing anyway).
   * Returned payloads may be views into `chunk`.
   */
  push(chunk: Uint8Array): Frame[] {
    if (this.#error) throw this.#error;
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const frames: Frame[] = [];
    let pos = 0;
    try {
      while (pos < buf.length) {
        if (!this.#header) {
          if (this.#headerFill === 0 && buf.length - pos >= HEADER_SIZE) {
            this.#header = decodeFrameHeader(buf, pos, this.#maxPayload);
            pos += HEADER_SIZE;
          } else {
            const n = Math.min(HEADER_SIZE - this.#headerFill, buf.length - pos);
            buf.copy(this.#headerBuf, this.#headerFill, pos, pos + n);
            this.#headerFill += n;
            pos += n;
            if (this.#headerFill < HEADER_SIZE) break;
            this.#headerFill = 0;
            this.#header = decodeFrameHeader(this.#headerBuf, 0, this.#maxPayload);
          }
        }
        const h = this.#header;
        let payload: Buffer;
        if (this.#payload === undefined && buf.length - pos >= h.size) {
          payload = buf.subarray(pos, pos + h.size);
          pos += h.size;
        } else {
          this.#payload ??= Buffer.allocUnsafe(h.size);
          const n = Math.min(h.size - this.#payloadFill, buf.length - pos);
          buf.copy(this.#payload, this.#payloadFill, pos, pos + n);
          this.#payloadFill += n;
          pos += n;
          if (this.#payloadFill < h.size) break;
          payload = this.#payload;
          this.#payload = undefined;
          this.#payloadFill = 0;
        }
        this.#header = undefined;
        frames.push({ id: h.id, seq: h.seq, payload, fds: NO_FDS });
      }
    } catch (e) {
      if (e instanceof FramingError) this.#error = e;
      throw e;
    }
    return frames;
  }

  /** The stream ended: throws FRAME_SHORT if it ended inside a frame. */
  end(): void {
    if (this.#error) throw this.#error;
    if (this.buffered > 0) {
      const e = new FramingError(WireErrorCode.FRAME_SHORT, `stream ended inside a frame (${this.buffered} bytes pending)`);
      if (this.#header) e.at(this.#header.id, this.#header.seq);
      this.#error = e;
      throw e;
    }
  }
}
