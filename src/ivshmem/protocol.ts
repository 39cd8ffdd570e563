/**
 * The ivshmem server ⇄ client wire protocol (docs/ivshmem.md §1), shared by the server
 * (src/ivshmem/server.ts) and the socket-backed device client (src/ivshmem/socket-device.ts).
 *
 * Every message is exactly 8 bytes, a signed 64-bit little-endian value, sent with its own
 * sendmsg() and carrying at most one file descriptor (SCM_RIGHTS). Values:
 *   0 .. 65535  a peer id (with an eventfd: "connect", one message per vector in order;
 *               without: "disconnect"). The first two messages are special: the version
 *               and the receiving client's own id.
 *   -1          with the shared-memory fd.
 * Anything else is invalid; QEMU refuses it (docs/ivshmem.md §4).
 */
import { InvalidArgumentError } from '../errors.js';

/** IVSHMEM_PROTOCOL_VERSION; QEMU ≥ 2.5 refuses anything else. */
export const PROTOCOL_VERSION = 0;
/** The value announcing the shared-memory fd. */
export const SHM_MESSAGE = -1;
/** Size of every message on the wire. */
export const MESSAGE_SIZE = 8;
/** Peer ids are 16 bits: the guest's Doorbell register carries them in bits 16..31. */
export const MAX_PEER_ID = 0xffff;

/**
 * The most vectors per peer our server hands out. QEMU itself accepts `vectors` 1..2048 on
 * ivshmem-doorbell (the MSI-X table limit; 0 and 2049 give "The number of MSI-X vectors is
 * invalid", verified with QEMU 7.2), but its non-ioeventfd doorbell path masks the vector
 * with 0xff, so vectors ≥ 256 are unreachable from a guest with `ioeventfd=off`. Under KVM
 * every (peer, vector) a device knows also costs one MMIO ioeventfd out of the VM's ~1000
 * (NR_IOBUS_DEVS), so large counts are expensive anyway. See docs/ivshmem.md §3.
 */
export const MAX_VECTORS = 256;
/** QEMU's own limit on the device's `vectors` property (MSI-X table size). */
export const QEMU_MAX_DEVICE_VECTORS = 2048;

/**
 * Smallest shared memory QEMU maps: it rounds the BAR to the host page size and then
 * refuses a smaller fd ("backing store size 0x800 does not match 'size' option 0x1000",
 * verified with QEMU 7.2). Sizes must also be powers of two (else QEMU aborts the VM).
 */
export const MIN_SHM_SIZE = 4096;
/** Keep sizes exactly representable and far below anything a PCI BAR could take. */
export const MAX_SHM_SIZE = 2 ** 40;

export function isPowerOfTwo(n: number): boolean {
  if (!Number.isSafeInteger(n) || n <= 0) return false;
  // BigInt: JS bitwise operators truncate to 32 bits.
  const b = BigInt(n);
  return (b & (b - 1n)) === 0n;
}

export function isValidPeerId(id: number): boolean {
  return Number.isInteger(id) && id >= 0 && id <= MAX_PEER_ID;
}

/** Throws InvalidArgumentError unless `size` is a shared-memory size QEMU can map. */
export function checkShmSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < MIN_SHM_SIZE || size > MAX_SHM_SIZE) {
    throw new InvalidArgumentError(`ivshmem: shared memory size ${size} out of range [${MIN_SHM_SIZE}, ${MAX_SHM_SIZE}]`);
  }
  if (!isPowerOfTwo(size)) {
    // docs/ivshmem.md §3-4: pci_register_bar asserts, the whole QEMU process gets SIGABRT.
    throw new InvalidArgumentError(`ivshmem: shared memory size ${size} is not a power of two (QEMU would abort)`);
  }
}

export function checkVectors(vectors: number, max = MAX_VECTORS): void {
  if (!Number.isInteger(vectors) || vectors < 1 || vectors > max) {
    throw new InvalidArgumentError(`ivshmem: vectors must be an integer in [1, ${max}], got ${vectors}`);
  }
}

export function checkPeerId(id: number, what = 'peer id'): void {
  if (!isValidPeerId(id)) {
    throw new InvalidArgumentError(`ivshmem: ${what} must be an integer in [0, ${MAX_PEER_ID}], got ${id}`);
  }
}

/** Encode one message value (-1 .. 65535 in practice; any int64 for test servers). */
export function encodeMessage(value: number | bigint): Buffer {
  const buf = Buffer.allocUnsafe(MESSAGE_SIZE);
  buf.writeBigInt64LE(BigInt(value), 0);
  return buf;
}

/**
 * Decode a complete 8-byte message. Returns a number for every value in the protocol's
 * range and `null` for anything outside -1..65535 (which no valid server sends).
 */
export function decodeMessage(buf: Uint8Array): number | null {
  if (buf.length !== MESSAGE_SIZE) throw new InvalidArgumentError(`ivshmem: message must be ${MESSAGE_SIZE} bytes`);
  const v = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).readBigInt64LE(0);
  if (v < -1n || v > BigInt(MAX_PEER_ID)) return null;
  return Number(v);
}
