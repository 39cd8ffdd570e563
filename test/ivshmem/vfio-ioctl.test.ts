// VFIO struct encoding/decoding (src/ivshmem/vfio/ioctl.ts), byte for byte against the kernel's
// uapi layouts (x86-64).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as io from '../../src/ivshmem/vfio/ioctl.js';

test('ioctl numbers: _IO(";", 100 + n)', () => {
  assert.equal(io.VFIO_GET_API_VERSION, 0x3b64);
  assert.equal(io.VFIO_CHECK_EXTENSION, 0x3b65);
  assert.equal(io.VFIO_SET_IOMMU, 0x3b66);
  assert.equal(io.VFIO_GROUP_GET_STATUS, 0x3b67);
  assert.equal(io.VFIO_GROUP_SET_CONTAINER, 0x3b68);
  assert.equal(io.VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
  assert.equal(io.VFIO_DEVICE_GET_INFO, 0x3b6b);
  assert.equal(io.VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
  assert.equal(io.VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d);
  assert.equal(io.VFIO_DEVICE_SET_IRQS, 0x3b6e);
  assert.equal(io.VFIO_DEVICE_IOEVENTFD, 0x3b74);
});

test('group status: argsz 8, flags decoded', () => {
  const b = io.encodeGroupStatus();
  assert.deepEqual([...b], [8, 0, 0, 0, 0, 0, 0, 0]);
  b.writeUInt32LE(io.VFIO_GROUP_FLAGS_VIABLE | io.VFIO_GROUP_FLAGS_CONTAINER_SET, 4);
  assert.equal(io.decodeGroupStatus(b).flags, 3);
  assert.throws(() => io.decodeGroupStatus(new Uint8Array(4)), { code: 'KVMCHAN_E_INVALID_ARG' });
});

test('region info: argsz 32, index at 8; size and offset are u64 at 16 and 24', () => {
  const b = io.encodeRegionInfo(2);
  assert.equal(b.length, 32);
  assert.equal(b.readUInt32LE(0), 32);
  assert.equal(b.readUInt32LE(8), 2);
  // What vfio-pci answers for BAR2 of a 4 MiB ivshmem: READ|WRITE|MMAP|CAPS, offset 2 << 40.
  b.writeUInt32LE(0xf, 4);
  b.writeBigUInt64LE(4n << 20n, 16);
  b.writeBigUInt64LE(2n << 40n, 24);
  assert.deepEqual(io.decodeRegionInfo(b), { flags: 0xf, index: 2, size: 4 << 20, offset: 2 * 2 ** 40 });
  b.writeBigUInt64LE(1n << 60n, 24);
  assert.throws(() => io.decodeRegionInfo(b), /exceeds 2\^53/);
  assert.throws(() => io.encodeRegionInfo(-1), { code: 'KVMCHAN_E_INVALID_ARG' });
});

test('irq info: argsz 16, index at 8, count at 12', () => {
  const b = io.encodeIrqInfo(io.VFIO_PCI_MSIX_IRQ_INDEX);
  assert.deepEqual([...b], [16, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
  b.writeUInt32LE(64, 12);
  b.writeUInt32LE(io.VFIO_IRQ_INFO_EVENTFD, 4);
  assert.deepEqual(io.decodeIrqInfo(b), { flags: 1, index: 2, count: 64 });
});

test('set irqs: 20-byte header, flags 0x24, one s32 fd per vector; disable is 0x21 with count 0', () => {
  const b = io.encodeIrqSetEventfds(2, 0, [7, 8, -1]);
  assert.equal(b.length, 32);
  assert.deepEqual([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8), b.readUInt32LE(12), b.readUInt32LE(16)], [32, 0x24, 2, 0, 3]);
  assert.deepEqual([b.readInt32LE(20), b.readInt32LE(24), b.readInt32LE(28)], [7, 8, -1]);
  const d = io.encodeIrqDisable(4);
  assert.deepEqual([d.readUInt32LE(0), d.readUInt32LE(4), d.readUInt32LE(8), d.readUInt32LE(12), d.readUInt32LE(16)], [20, 0x21, 4, 0, 0]);
  assert.throws(() => io.encodeIrqSetEventfds(2, 0, [-2]), { code: 'KVMCHAN_E_INVALID_ARG' });
});

test('ioeventfd: 32 bytes, size flag 4, u64 offset and data, s32 fd, reserved 0', () => {
  const b = io.encodeIoeventfd(12, io.doorbellValue(2, 5), 9);
  assert.equal(b.length, 32);
  assert.equal(b.readUInt32LE(0), 32);
  assert.equal(b.readUInt32LE(4), 4);
  assert.equal(b.readBigUInt64LE(8), 12n);
  assert.equal(b.readBigUInt64LE(16), 0x20005n);
  assert.equal(b.readInt32LE(24), 9);
  assert.equal(b.readUInt32LE(28), 0);
  assert.equal(io.encodeIoeventfd(2 ** 41 + 12, 0, -1).readBigUInt64LE(8), (1n << 41n) + 12n);
  assert.equal(io.encodeIoeventfd(12, 0, -1).readInt32LE(24), -1);
});

test('doorbell value is (peer << 16) | vector, both 16-bit', () => {
  assert.equal(io.doorbellValue(0, 0), 0);
  assert.equal(io.doorbellValue(0xffff, 0xffff), 0xffffffff);
  assert.equal(io.doorbellValue(1, 3), 0x10003);
  assert.throws(() => io.doorbellValue(65536, 0), { code: 'KVMCHAN_E_INVALID_ARG' });
  assert.throws(() => io.doorbellValue(0, -1), { code: 'KVMCHAN_E_INVALID_ARG' });
});

test('device name is NUL-terminated', () => {
  assert.deepEqual(io.encodeDeviceName('0000:01:00.0'), Buffer.from('0000:01:00.0\0'));
});
