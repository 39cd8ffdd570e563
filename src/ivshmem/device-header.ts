/**
 * The device header (docs/ivshmem.md §9): the last 4 KiB page of every device's shared
 * memory, written by the host daemon when it creates the memory, before any guest attaches.
 * A guest that finds its devices on a PCI bus (VFIO) reads it to tell the control device from
 * pools and one pool from another.
 *
 * The memory is writable by every peer, including the other guest of a pair pool, so a header
 * proves nothing by itself. A guest reads it once, checks it against what it knows
 * independently (BAR size and MSI-X count from its kernel, IVPosition from the device,
 * EVENT_POOL_ADDED from the control channel) and, for a pool, checks the tag: an HMAC over the
 * header with the member's **device key**, a secret that only the host and that guest know
 * (it sits in the guest's control device, which no other guest can map). The other guest of a
 * pair pool cannot make a device look like a pool it is not a member of.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { InvalidArgumentError } from '../errors.js';
import type { Device } from './device.js';
import { isPowerOfTwo, MIN_SHM_SIZE, MAX_SHM_SIZE } from './protocol.js';

export const DEVICE_HEADER_MAGIC = 0x4b564448; // "HDVK" little-endian: 48 44 56 4b
export const DEVICE_HEADER_VERSION = 1;
/** Bytes at the start of the header page that carry meaning; the rest of the page is zero. */
export const DEVICE_HEADER_SIZE = 128;
/** The header occupies the last page of the shared memory. */
export const DEVICE_HEADER_PAGE = 4096;
export const DEVICE_KEY_SIZE = 32;
export const DEVICE_TAG_SIZE = 16;
/** Peers that get a tag in a pool header: IVPosition 1 and 2 (peer 0 is the host). */
export const TAGGED_PEERS = [1, 2] as const;

export enum DeviceKind {
  CONTROL = 1,
  POOL = 2,
}

/**
 * Layout (little-endian):
 *   0 u32 magic   4 u16 version   6 u16 kind   8 u32 pool (0 for control)   12 u32 vectors
 *  16 u64 size   24 u32 reserved (0)   28 u32 reserved (0)
 *  32 control: u8 key[32]      pool: u8 tag_peer1[16], u8 tag_peer2[16]
 *  64..128 reserved (0)
 */
export interface DeviceHeader {
  kind: DeviceKind;
  pool: number;
  vectors: number;
  size: number;
  /** Control devices: the guest's device key. */
  key?: Buffer;
  /** Pools: tag for IVPosition 1 and 2 (zero-filled when that peer does not exist). */
  tags?: [Buffer, Buffer];
}

/** Offset of the header in a device of `size` bytes. */
export function headerOffset(size: number): number {
  return size - DEVICE_HEADER_PAGE;
}

function fixedPart(h: Pick<DeviceHeader, 'kind' | 'pool' | 'vectors' | 'size'>): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(DEVICE_HEADER_MAGIC, 0);
  b.writeUInt16LE(DEVICE_HEADER_VERSION, 4);
  b.writeUInt16LE(h.kind, 6);
  b.writeUInt32LE(h.pool, 8);
  b.writeUInt32LE(h.vectors, 12);
  b.writeBigUInt64LE(BigInt(h.size), 16);
  return b;
}

/** The tag that proves a pool header to the guest at `peerId` holding `key`. */
export function poolTag(key: Uint8Array, h: Pick<DeviceHeader, 'pool' | 'vectors' | 'size'>, peerId: number): Buffer {
  if (key.byteLength !== DEVICE_KEY_SIZE) throw new InvalidArgumentError(`device key must be ${DEVICE_KEY_SIZE} bytes`);
  const peer = Buffer.alloc(4);
  peer.writeUInt32LE(peerId, 0);
  return createHmac('sha256', key)
    .update('kvmchan device tag v1\0')
    .update(fixedPart({ kind: DeviceKind.POOL, ...h }))
    .update(peer)
    .digest()
    .subarray(0, DEVICE_TAG_SIZE);
}

function checkGeometry(h: Pick<DeviceHeader, 'pool' | 'vectors' | 'size'>): void {
  if (!Number.isInteger(h.pool) || h.pool < 0 || h.pool > 0xffffffff) throw new InvalidArgumentError(`bad pool id ${h.pool}`);
  if (!Number.isInteger(h.vectors) || h.vectors < 1 || h.vectors > 0xffff) throw new InvalidArgumentError(`bad vector count ${h.vectors}`);
  if (!Number.isSafeInteger(h.size) || !isPowerOfTwo(h.size) || h.size < MIN_SHM_SIZE || h.size > MAX_SHM_SIZE) {
    throw new InvalidArgumentError(`bad device size ${h.size}`);
  }
}

export function encodeControlHeader(size: number, vectors: number, key: Uint8Array): Buffer {
  checkGeometry({ pool: 0, vectors, size });
  if (key.byteLength !== DEVICE_KEY_SIZE) throw new InvalidArgumentError(`device key must be ${DEVICE_KEY_SIZE} bytes`);
  const b = Buffer.alloc(DEVICE_HEADER_SIZE);
  fixedPart({ kind: DeviceKind.CONTROL, pool: 0, vectors, size }).copy(b, 0);
  Buffer.from(key.buffer, key.byteOffset, key.byteLength).copy(b, 32);
  return b;
}

/** `keys[i]` is the device key of the guest at IVPosition i + 1 (undefined: no such member). */
export function encodePoolHeader(pool: number, size: number, vectors: number, keys: readonly (Uint8Array | undefined)[]): Buffer {
  checkGeometry({ pool, vectors, size });
  if (keys.length > TAGGED_PEERS.length) throw new InvalidArgumentError(`a pool has at most ${TAGGED_PEERS.length} guest members`);
  const b = Buffer.alloc(DEVICE_HEADER_SIZE);
  fixedPart({ kind: DeviceKind.POOL, pool, vectors, size }).copy(b, 0);
  keys.forEach((key, i) => {
    if (key !== undefined) poolTag(key, { pool, vectors, size }, TAGGED_PEERS[i]!).copy(b, 32 + DEVICE_TAG_SIZE * i);
  });
  return b;
}

export class DeviceHeaderError extends InvalidArgumentError {
  constructor(message: string) {
    super(`device header: ${message}`);
    this.name = 'DeviceHeaderError';
  }
}

/**
 * Decode a header snapshot (take a private copy of shared memory first, then decode the copy:
 * a peer must not be able to change it between check and use). Throws DeviceHeaderError.
 */
export function decodeDeviceHeader(bytes: Uint8Array): DeviceHeader {
  if (bytes.byteLength < DEVICE_HEADER_SIZE) throw new DeviceHeaderError(`${bytes.byteLength} bytes, need ${DEVICE_HEADER_SIZE}`);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, DEVICE_HEADER_SIZE);
  if (b.readUInt32LE(0) !== DEVICE_HEADER_MAGIC) throw new DeviceHeaderError(`bad magic 0x${b.readUInt32LE(0).toString(16)}`);
  const version = b.readUInt16LE(4);
  if (version !== DEVICE_HEADER_VERSION) throw new DeviceHeaderError(`unsupported version ${version}`);
  const kind = b.readUInt16LE(6);
  const pool = b.readUInt32LE(8);
  const vectors = b.readUInt32LE(12);
  const size64 = b.readBigUInt64LE(16);
  if (b.readUInt32LE(24) !== 0 || b.readUInt32LE(28) !== 0 || b.subarray(64, DEVICE_HEADER_SIZE).some((x) => x !== 0)) {
    throw new DeviceHeaderError('non-zero reserved bytes');
  }
  if (size64 > BigInt(MAX_SHM_SIZE)) throw new DeviceHeaderError(`size 0x${size64.toString(16)} too large`);
  const size = Number(size64);
  try {
    checkGeometry({ pool, vectors, size });
  } catch (err) {
    throw new DeviceHeaderError((err as Error).message);
  }
  if (kind === (DeviceKind.CONTROL as number)) {
    if (pool !== 0) throw new DeviceHeaderError('control device with a pool id');
    const key = Buffer.from(b.subarray(32, 32 + DEVICE_KEY_SIZE));
    if (key.every((x) => x === 0)) throw new DeviceHeaderError('control device without a key');
    return { kind: DeviceKind.CONTROL, pool, vectors, size, key };
  }
  if (kind === (DeviceKind.POOL as number)) {
    if (pool === 0) throw new DeviceHeaderError('pool 0 does not exist');
    const tags: [Buffer, Buffer] = [Buffer.from(b.subarray(32, 48)), Buffer.from(b.subarray(48, 64))];
    return { kind: DeviceKind.POOL, pool, vectors, size, tags };
  }
  throw new DeviceHeaderError(`unknown kind ${kind}`);
}

/** What the guest knows about a device without trusting its memory. */
export interface DeviceFacts {
  /** BAR2 size (from the guest kernel). */
  size: number;
  /** MSI-X vectors (from the guest kernel). */
  vectors: number;
  /** IVPosition register. */
  ivPosition: number;
}

/** Why `h` cannot be the guest's control device, or null when it can. */
export function controlMismatch(h: DeviceHeader, facts: DeviceFacts): string | null {
  if (h.kind !== DeviceKind.CONTROL) return `kind ${DeviceKind[h.kind]}`;
  if (h.size !== facts.size) return `header size ${h.size}, BAR2 ${facts.size}`;
  if (h.vectors !== facts.vectors) return `header vectors ${h.vectors}, MSI-X ${facts.vectors}`;
  if (facts.vectors !== 1) return `${facts.vectors} MSI-X vectors (a control device has 1)`;
  if (facts.ivPosition !== 1) return `IVPosition ${facts.ivPosition} (the guest is peer 1 on its control device)`;
  return null;
}

export interface PoolExpectation {
  pool: number;
  peerId: number;
  vectors: number;
  size: number;
}

/** Why `h` cannot be the announced pool `want` for the guest holding `key`, or null when it is. */
export function poolMismatch(h: DeviceHeader, facts: DeviceFacts, want: PoolExpectation, key: Uint8Array): string | null {
  if (h.kind !== DeviceKind.POOL) return `kind ${DeviceKind[h.kind]}`;
  if (h.pool !== want.pool) return `pool ${h.pool}, not ${want.pool}`;
  if (facts.size !== want.size || h.size !== want.size) return `size: announced ${want.size}, BAR2 ${facts.size}, header ${h.size}`;
  if (facts.vectors !== want.vectors || h.vectors !== want.vectors)
    return `vectors: announced ${want.vectors}, MSI-X ${facts.vectors}, header ${h.vectors}`;
  if (facts.ivPosition !== want.peerId) return `IVPosition ${facts.ivPosition}, announced ${want.peerId}`;
  const slot = TAGGED_PEERS.indexOf(want.peerId as 1 | 2);
  if (slot < 0) return `peer id ${want.peerId} cannot be a guest member`;
  const expected = poolTag(key, h, want.peerId);
  if (!timingSafeEqual(expected, h.tags![slot]!)) return 'tag does not verify with our device key';
  return null;
}

/** A fresh random device key for a guest. */
export function newDeviceKey(): Buffer {
  return randomBytes(DEVICE_KEY_SIZE);
}

/** Write `header` into the header page of `device` (the host, before any guest attaches). */
export function writeDeviceHeader(device: Pick<Device, 'map' | 'unmap' | 'shm'>, header: Uint8Array): void {
  const page = device.map(headerOffset(device.shm.size), DEVICE_HEADER_PAGE);
  try {
    const bytes = new Uint8Array(page);
    bytes.fill(0);
    bytes.set(header);
  } finally {
    device.unmap(page);
  }
}
