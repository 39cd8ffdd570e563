/**
 * VFIO ioctl numbers and struct layouts (x86-64), as the guest backend uses them
 * (docs/ivshmem.md §8). VFIO requests are `_IO(';', 100 + n)`: no direction and no size are
 * encoded, so the addon passes an integer argument by value or a buffer by pointer; every
 * struct starts with its own `argsz`. Pure encoding/decoding, no system calls: unit-tested.
 */
import { InvalidArgumentError } from '../../errors.js';

const base = (n: number): number => 0x3b00 | (100 + n);

export const VFIO_GET_API_VERSION = base(0); // 0x3b64
export const VFIO_CHECK_EXTENSION = base(1); // 0x3b65, int by value
export const VFIO_SET_IOMMU = base(2); // 0x3b66, int by value
export const VFIO_GROUP_GET_STATUS = base(3); // 0x3b67
export const VFIO_GROUP_SET_CONTAINER = base(4); // 0x3b68, pointer to int
export const VFIO_GROUP_GET_DEVICE_FD = base(6); // 0x3b6a, pointer to NUL-terminated name
export const VFIO_DEVICE_GET_INFO = base(7); // 0x3b6b
export const VFIO_DEVICE_GET_REGION_INFO = base(8); // 0x3b6c
export const VFIO_DEVICE_GET_IRQ_INFO = base(9); // 0x3b6d
export const VFIO_DEVICE_SET_IRQS = base(10); // 0x3b6e
export const VFIO_DEVICE_IOEVENTFD = base(16); // 0x3b74

export const VFIO_API_VERSION = 0;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_NOIOMMU_IOMMU = 8;

export const VFIO_GROUP_FLAGS_VIABLE = 1;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 2;

export const VFIO_REGION_INFO_FLAG_READ = 1;
export const VFIO_REGION_INFO_FLAG_WRITE = 2;
export const VFIO_REGION_INFO_FLAG_MMAP = 4;
export const VFIO_REGION_INFO_FLAG_CAPS = 8;

export const VFIO_IRQ_INFO_EVENTFD = 1;

export const VFIO_IRQ_SET_DATA_NONE = 1;
export const VFIO_IRQ_SET_DATA_BOOL = 2;
export const VFIO_IRQ_SET_DATA_EVENTFD = 4;
export const VFIO_IRQ_SET_ACTION_MASK = 8;
export const VFIO_IRQ_SET_ACTION_UNMASK = 16;
export const VFIO_IRQ_SET_ACTION_TRIGGER = 32;

export const VFIO_DEVICE_IOEVENTFD_32 = 4;

/** vfio-pci region indexes. */
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
export const VFIO_PCI_BAR2_REGION_INDEX = 2;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;

/** vfio-pci IRQ indexes. */
export const VFIO_PCI_INTX_IRQ_INDEX = 0;
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
export const VFIO_PCI_ERR_IRQ_INDEX = 3;
export const VFIO_PCI_REQ_IRQ_INDEX = 4;

/** PCI config space: the Command register and its Bus Master Enable bit. */
export const PCI_COMMAND = 4;
export const PCI_COMMAND_MASTER = 0x4;

/** ivshmem BAR0 registers (4 bytes each). */
export const IVSHMEM_INTR_MASK = 0;
export const IVSHMEM_INTR_STATUS = 4;
export const IVSHMEM_IV_POSITION = 8;
export const IVSHMEM_DOORBELL = 12;

/** Most ioeventfds vfio-pci accepts per device. */
export const VFIO_MAX_IOEVENTFDS = 1000;

// --- struct vfio_group_status { u32 argsz; u32 flags; } ------------------------------------

export const GROUP_STATUS_SIZE = 8;

export function encodeGroupStatus(): Buffer {
  const b = Buffer.alloc(GROUP_STATUS_SIZE);
  b.writeUInt32LE(GROUP_STATUS_SIZE, 0);
  return b;
}

export function decodeGroupStatus(b: Uint8Array): { flags: number } {
  return { flags: view(b, GROUP_STATUS_SIZE).getUint32(4, true) };
}

// --- struct vfio_device_info { u32 argsz, flags, num_regions, num_irqs; (u32 cap_offset, pad) } --

export const DEVICE_INFO_SIZE = 24;
export const VFIO_DEVICE_FLAGS_PCI = 2;

export function encodeDeviceInfo(): Buffer {
  const b = Buffer.alloc(DEVICE_INFO_SIZE);
  b.writeUInt32LE(DEVICE_INFO_SIZE, 0);
  return b;
}

export interface DeviceInfo {
  flags: number;
  numRegions: number;
  numIrqs: number;
}

export function decodeDeviceInfo(b: Uint8Array): DeviceInfo {
  const v = view(b, 16);
  return { flags: v.getUint32(4, true), numRegions: v.getUint32(8, true), numIrqs: v.getUint32(12, true) };
}

// --- struct vfio_region_info (32 bytes) ------------------------------------------------------

export const REGION_INFO_SIZE = 32;

export interface RegionInfo {
  index: number;
  flags: number;
  /** Bytes in the region (for a BAR: the BAR's size). */
  size: number;
  /** Where the region starts in the device fd (pread/pwrite/mmap offset). */
  offset: number;
}

export function encodeRegionInfo(index: number): Buffer {
  checkU32(index, 'region index');
  const b = Buffer.alloc(REGION_INFO_SIZE);
  b.writeUInt32LE(REGION_INFO_SIZE, 0);
  b.writeUInt32LE(index, 8);
  return b;
}

export function decodeRegionInfo(b: Uint8Array): RegionInfo {
  const v = view(b, REGION_INFO_SIZE);
  return {
    flags: v.getUint32(4, true),
    index: v.getUint32(8, true),
    size: safeU64(v.getBigUint64(16, true), 'region size'),
    offset: safeU64(v.getBigUint64(24, true), 'region offset'),
  };
}

// --- struct vfio_irq_info { u32 argsz, flags, index, count; } -------------------------------

export const IRQ_INFO_SIZE = 16;

export interface IrqInfo {
  index: number;
  flags: number;
  count: number;
}

export function encodeIrqInfo(index: number): Buffer {
  checkU32(index, 'irq index');
  const b = Buffer.alloc(IRQ_INFO_SIZE);
  b.writeUInt32LE(IRQ_INFO_SIZE, 0);
  b.writeUInt32LE(index, 8);
  return b;
}

export function decodeIrqInfo(b: Uint8Array): IrqInfo {
  const v = view(b, IRQ_INFO_SIZE);
  return { flags: v.getUint32(4, true), index: v.getUint32(8, true), count: v.getUint32(12, true) };
}

// --- struct vfio_irq_set { u32 argsz, flags, index, start, count; u8 data[]; } ---------------

export const IRQ_SET_HEADER_SIZE = 20;

/** Trigger `fds[i]` for vector start + i (fd -1: that vector's trigger is removed). */
export function encodeIrqSetEventfds(index: number, start: number, fds: readonly number[]): Buffer {
  checkU32(index, 'irq index');
  checkU32(start, 'irq start');
  const b = Buffer.alloc(IRQ_SET_HEADER_SIZE + 4 * fds.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 4);
  b.writeUInt32LE(index, 8);
  b.writeUInt32LE(start, 12);
  b.writeUInt32LE(fds.length, 16);
  fds.forEach((fd, i) => {
    if (!Number.isInteger(fd) || fd < -1 || fd > 0x7fffffff) throw new InvalidArgumentError(`bad eventfd ${fd}`);
    b.writeInt32LE(fd, IRQ_SET_HEADER_SIZE + 4 * i);
  });
  return b;
}

/** Disable every trigger of an IRQ index (DATA_NONE | ACTION_TRIGGER, count 0). */
export function encodeIrqDisable(index: number): Buffer {
  checkU32(index, 'irq index');
  const b = Buffer.alloc(IRQ_SET_HEADER_SIZE);
  b.writeUInt32LE(IRQ_SET_HEADER_SIZE, 0);
  b.writeUInt32LE(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 4);
  b.writeUInt32LE(index, 8);
  return b;
}

// --- struct vfio_device_ioeventfd (32 bytes) -------------------------------------------------

export const IOEVENTFD_SIZE = 32;

/** Make the kernel store `data` (4 bytes) at device-fd offset `offset` whenever `fd` is
 *  signalled; fd -1 removes the registration for (offset, data). */
export function encodeIoeventfd(offset: number, data: number, fd: number): Buffer {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidArgumentError(`bad ioeventfd offset ${offset}`);
  checkU32(data, 'ioeventfd data');
  if (!Number.isInteger(fd) || fd < -1 || fd > 0x7fffffff) throw new InvalidArgumentError(`bad ioeventfd fd ${fd}`);
  const b = Buffer.alloc(IOEVENTFD_SIZE);
  b.writeUInt32LE(IOEVENTFD_SIZE, 0);
  b.writeUInt32LE(VFIO_DEVICE_IOEVENTFD_32, 4);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeBigUInt64LE(BigInt(data), 16);
  b.writeInt32LE(fd, 24);
  return b;
}

/** The ivshmem Doorbell register value that rings `peer` on `vector`. */
export function doorbellValue(peer: number, vector: number): number {
  if (!Number.isInteger(peer) || peer < 0 || peer > 0xffff) throw new InvalidArgumentError(`peer ${peer} not in [0, 65535]`);
  if (!Number.isInteger(vector) || vector < 0 || vector > 0xffff) throw new InvalidArgumentError(`vector ${vector} not in [0, 65535]`);
  return ((peer << 16) | vector) >>> 0;
}

/** GROUP_GET_DEVICE_FD's argument: the device name (PCI address) NUL-terminated. */
export function encodeDeviceName(bdf: string): Buffer {
  return Buffer.from(`${bdf}\0`, 'utf8');
}

function view(b: Uint8Array, need: number): DataView {
  if (b.byteLength < need) throw new InvalidArgumentError(`VFIO struct needs ${need} bytes, got ${b.byteLength}`);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function checkU32(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new InvalidArgumentError(`${what} ${n} not a u32`);
}

function safeU64(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new InvalidArgumentError(`${what} 0x${v.toString(16)} exceeds 2^53`);
  return Number(v);
}
