/**
 * The 8-byte frame header and the seqpacket framing rules (docs/wire-protocol.md §2, §3.1).
 */
import { HEADER_SIZE, MAX_FDS, MAX_PAYLOAD } from './constants.js';
import { FramingError, WireErrorCode } from './errors.js';
import type { Frame } from './types.js';

export interface FrameHeader {
  readonly id: number;
  /** Payload bytes that follow the header. */
  readonly size: number;
  readonly seq: number;
}

/**
 * Reads the header at `offset`. Throws FRAME_SHORT if fewer than 8 bytes are there and
 * FRAME_OVERSIZE if `size` exceeds `maxPayload` (§2) — before any payload is awaited.
 */
export function decodeFrameHeader(buf: Uint8Array, offset = 0, maxPayload = MAX_PAYLOAD): FrameHeader {
  if (buf.length - offset < HEADER_SIZE) {
    throw new FramingError(
      WireErrorCode.FRAME_SHORT,
      `frame of ${Math.max(0, buf.length - offset)} bytes is shorter than the 8-byte header`,
    );
  }
  const b = buf;
  const o = offset;
  const id = b[o]! | (b[o + 1]! << 8);
  const size = b[o + 2]! | (b[o + 3]! << 8);
  const seq = (b[o + 4]! | (b[o + 5]! << 8) | (b[o + 6]! << 16) | (b[o + 7]! << 24)) >>> 0;
  if (size > maxPayload) {
    throw new FramingError(WireErrorCode.FRAME_OVERSIZE, `payload size ${size} exceeds the maximum ${maxPayload}`).at(id, seq);
  }
  return { id, size, seq };
}

/** Writes a header into `buf` at `offset`. */
export function writeFrameHeader(buf: Buffer, id: number, size: number, seq: number, offset = 0): void {
  buf.writeUInt16LE(id, offset);
  buf.writeUInt16LE(size, offset + 2);
  buf.writeUInt32LE(seq, offset + 4);
}

/** What recvmsg reported besides the bytes (§3.1). */
export interface DatagramInfo {
  /** fds from SCM_RIGHTS, in order. */
  readonly fds?: readonly number[];
  /** MSG_TRUNC was set: the datagram was longer than the buffer. */
  readonly truncated?: boolean;
  /** MSG_CTRUNC was set: some ancillary data (fds) was discarded. */
  readonly controlTruncated?: boolean;
  readonly maxPayload?: number;
}

/**
 * Frames one seqpacket datagram (§3.1): exactly one frame, whose `size` accounts for every byte
 * after the header. Throws FramingError; the caller then closes the connection and every fd
 * in `info.fds`. On success the fds move into the frame (still the caller's to close).
 */
export function decodeDatagram(data: Buffer, info: DatagramInfo = {}): Frame {
  const maxPayload = info.maxPayload ?? MAX_PAYLOAD;
  if (info.truncated === true) {
    throw new FramingError(WireErrorCode.FRAME_TRUNCATED, 'datagram truncated by the receive buffer (MSG_TRUNC)');
  }
  if (info.controlTruncated === true) {
    throw new FramingError(WireErrorCode.CONTROL_TRUNCATED, 'ancillary data truncated (MSG_CTRUNC)');
  }
  const fds = info.fds ?? [];
  if (fds.length > MAX_FDS) {
    throw new FramingError(WireErrorCode.FDS_NOT_ALLOWED, `${fds.length} fds exceed the maximum ${MAX_FDS}`);
  }
  const h = decodeFrameHeader(data, 0, maxPayload);
  if (h.size !== data.length - HEADER_SIZE) {
    throw new FramingError(
      WireErrorCode.FRAME_SIZE_MISMATCH,
      `header says ${h.size} payload bytes, datagram has ${data.length - HEADER_SIZE}`,
    ).at(h.id, h.seq);
  }
  return { id: h.id, seq: h.seq, payload: data.subarray(HEADER_SIZE), fds };
}
