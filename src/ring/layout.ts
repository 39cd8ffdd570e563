/**
 * Shared-memory layout of a vchan region (docs/ring-protocol.md §1–§2).
 * Offsets are byte offsets from the start of the region; `I_*` are the same
 * offsets divided by 4, as indices into an Int32Array over the control page.
 */
import { InvalidArgumentError } from '../errors.js';

export const MAGIC = 0x4e48434b; // bytes 'K' 'C' 'H' 'N'
export const VERSION = 1;
export const HEADER_SIZE = 4096;
export const MIN_ORDER = 10;
export const MAX_ORDER = 28;

export const OFF_MAGIC = 0;
export const OFF_VERSION = 4;
export const OFF_HEADER_SIZE = 6;
export const OFF_C2S_ORDER = 8;
export const OFF_S2C_ORDER = 9;
export const OFF_C2S_OFFSET = 12;
export const OFF_S2C_OFFSET = 16;

// Client-written cache line.
export const OFF_C2S_PROD = 64;
export const OFF_S2C_CONS = 68;
export const OFF_CLIENT_STATE = 72;
export const OFF_C2S_WRAPS = 76;
// Server-written cache line.
export const OFF_S2C_PROD = 128;
export const OFF_C2S_CONS = 132;
export const OFF_SERVER_STATE = 136;
export const OFF_S2C_WRAPS = 140;
// Notify words (atomic RMW by both sides).
export const OFF_CLIENT_NOTIFY = 192;
export const OFF_SERVER_NOTIFY = 196;

/** Names of the u32 fields of §2, used by conformance vectors and tools. */
export const FIELDS: Readonly<Record<string, number>> = {
  c2s_prod: OFF_C2S_PROD,
  s2c_cons: OFF_S2C_CONS,
  client_state: OFF_CLIENT_STATE,
  c2s_wraps: OFF_C2S_WRAPS,
  s2c_prod: OFF_S2C_PROD,
  c2s_cons: OFF_C2S_CONS,
  server_state: OFF_SERVER_STATE,
  s2c_wraps: OFF_S2C_WRAPS,
  client_notify: OFF_CLIENT_NOTIFY,
  server_notify: OFF_SERVER_NOTIFY,
};

export const STATE_CLOSED = 0;
export const STATE_CONNECTED = 1;
export const STATE_WAITING = 2;

export const NOTIFY_WRITE = 0x1;
export const NOTIFY_READ = 0x2;

export type Role = 'server' | 'client';

export interface RingGeometry {
  c2sOrder: number;
  s2cOrder: number;
}

export function checkOrder(order: number, what: string): void {
  if (!Number.isInteger(order) || order < MIN_ORDER || order > MAX_ORDER) {
    throw new InvalidArgumentError(`${what}: ring order ${order} outside [${MIN_ORDER}, ${MAX_ORDER}]`);
  }
}

/** Smallest order whose ring holds `min` bytes, at least 1 KiB (ring-protocol.md §3). */
export function orderForMin(min: number): number {
  if (!Number.isSafeInteger(min) || min < 0) throw new InvalidArgumentError(`invalid ring size ${min}`);
  let order = MIN_ORDER;
  while (2 ** order < min) order++;
  if (order > MAX_ORDER) {
    throw new InvalidArgumentError(`ring size ${min} exceeds the maximum of ${2 ** MAX_ORDER} bytes`);
  }
  return order;
}

export function regionLength(g: RingGeometry): number {
  return HEADER_SIZE + 2 ** g.c2sOrder + 2 ** g.s2cOrder;
}

/**
 * The allocator's setup of a fresh region (§3). Only the daemon calls this; the
 * memory must be exclusively its own at this point.
 */
export function initializeRegion(buffer: ArrayBuffer, byteOffset: number, g: RingGeometry): void {
  checkOrder(g.c2sOrder, 'c2s');
  checkOrder(g.s2cOrder, 's2c');
  const len = regionLength(g);
  if (byteOffset + len > buffer.byteLength) throw new InvalidArgumentError('region does not fit the buffer');
  // Only the control page is written: the data areas of a fresh memfd read as zeros, a pool
  // extent was wiped when it was freed (docs/pools.md, "Freeing"), and a reader never looks
  // past what the producer index covers. Zeroing them would commit every page of every ring
  // at setup (2 × 64 MiB for a large vchan) for nothing.
  new Uint8Array(buffer, byteOffset, HEADER_SIZE).fill(0);
  const dv = new DataView(buffer, byteOffset, HEADER_SIZE);
  dv.setUint32(OFF_MAGIC, MAGIC, true);
  dv.setUint16(OFF_VERSION, VERSION, true);
  dv.setUint16(OFF_HEADER_SIZE, HEADER_SIZE, true);
  dv.setUint8(OFF_C2S_ORDER, g.c2sOrder);
  dv.setUint8(OFF_S2C_ORDER, g.s2cOrder);
  dv.setUint32(OFF_C2S_OFFSET, HEADER_SIZE, true);
  dv.setUint32(OFF_S2C_OFFSET, HEADER_SIZE + 2 ** g.c2sOrder, true);
  const ctl = new Int32Array(buffer, byteOffset, HEADER_SIZE / 4);
  Atomics.store(ctl, OFF_CLIENT_NOTIFY / 4, NOTIFY_WRITE);
  Atomics.store(ctl, OFF_CLIENT_STATE / 4, STATE_WAITING);
  Atomics.store(ctl, OFF_SERVER_STATE / 4, STATE_CONNECTED);
}
