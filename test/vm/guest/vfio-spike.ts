/**
 * Runs INSIDE the test guest (test/vm/vfio-spike.test.ts starts it): drive the ivshmem-doorbell
 * device 1af4:1110 through VFIO with nothing but the native addon, the way a guest kvmchand
 * will (docs/vms.md "VFIO in the guest"). Prints one `STEP <name> <json>` line per stage; the
 * host test reacts to those lines and rings/reads from its side.
 *
 * Usage: node vfio-spike.js <ping-pong rounds> [no-bus-master]
 * With no-bus-master the script leaves PCI_COMMAND alone, waits NO_MASTER_WAIT_MS for the
 * host's kicks, reports what arrived (nothing, docs/vms.md) and skips the ping-pong.
 */
import fs from 'node:fs';
import path from 'node:path';
import { native, EFD_NONBLOCK } from '../../../src/native.js';
import { EventfdWaiter, HOST_PATTERN_OFFSET, HOST_PATTERN_SEED, PATTERN_BYTES, patternByte } from './spike-shared.js';

// VFIO ioctls: _IO(';', 100 + n). No size is encoded, so the addon passes buffers as they are.
const VFIO_GET_API_VERSION = 0x3b64;
const VFIO_CHECK_EXTENSION = 0x3b65;
const VFIO_SET_IOMMU = 0x3b66;
const VFIO_GROUP_GET_STATUS = 0x3b67;
const VFIO_GROUP_SET_CONTAINER = 0x3b68;
const VFIO_GROUP_GET_DEVICE_FD = 0x3b6a;
const VFIO_DEVICE_GET_INFO = 0x3b6b;
const VFIO_DEVICE_GET_REGION_INFO = 0x3b6c;
const VFIO_DEVICE_GET_IRQ_INFO = 0x3b6d;
const VFIO_DEVICE_SET_IRQS = 0x3b6e;
const VFIO_DEVICE_IOEVENTFD = 0x3b74;

const VFIO_API_VERSION = 0;
const VFIO_TYPE1v2_IOMMU = 3;
const VFIO_GROUP_FLAGS_VIABLE = 1;
const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;
const VFIO_DEVICE_IOEVENTFD_32 = 1 << 2;
const VFIO_PCI_BAR0_REGION_INDEX = 0;
const VFIO_PCI_BAR2_REGION_INDEX = 2;
const VFIO_PCI_CONFIG_REGION_INDEX = 7;
const VFIO_PCI_MSIX_IRQ_INDEX = 2;
const VFIO_PCI_REQ_IRQ_INDEX = 4;

const PCI_COMMAND = 4;
const PCI_COMMAND_MEMORY = 1 << 1;
const PCI_COMMAND_MASTER = 1 << 2;
// ivshmem BAR0 registers.
const IVSHMEM_IVPOSITION = 8;
const IVSHMEM_DOORBELL = 12;

const HOST_PEER = 0;

function step(name: string, data: Record<string, unknown> = {}): void {
  process.stdout.write(`STEP ${name} ${JSON.stringify(data)}\n`);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function findDevice(): string {
  const root = '/sys/bus/pci/devices';
  for (const bdf of fs.readdirSync(root).sort()) {
    const vendor = fs.readFileSync(path.join(root, bdf, 'vendor'), 'utf8').trim();
    const device = fs.readFileSync(path.join(root, bdf, 'device'), 'utf8').trim();
    if (vendor === '0x1af4' && device === '0x1110') return bdf;
  }
  throw new Error('no ivshmem device (1af4:1110) in /sys/bus/pci/devices');
}

function currentDriver(bdf: string): string | null {
  try {
    return path.basename(fs.readlinkSync(`/sys/bus/pci/devices/${bdf}/driver`));
  } catch {
    return null;
  }
}

/** driver_override + drivers_probe, retried: the first probe may bind nothing. */
function bindVfio(bdf: string): number {
  const dev = `/sys/bus/pci/devices/${bdf}`;
  const was = currentDriver(bdf);
  if (was === 'vfio-pci') return 0;
  if (was !== null) fs.writeFileSync(`${dev}/driver/unbind`, bdf);
  fs.writeFileSync(`${dev}/driver_override`, 'vfio-pci');
  const deadline = Date.now() + 10_000;
  for (let attempt = 1; ; attempt++) {
    try {
      fs.writeFileSync('/sys/bus/pci/drivers_probe', bdf);
    } catch {
      // EINVAL/ENODEV while vfio-pci is still registering; retry
    }
    if (currentDriver(bdf) === 'vfio-pci') return attempt;
    if (Date.now() > deadline) throw new Error(`${bdf}: vfio-pci did not bind (driver ${currentDriver(bdf)})`);
    sleepSync(5);
  }
}

function u32Buf(words: number): { buf: Buffer; dv: DataView } {
  const buf = Buffer.alloc(words * 4);
  return { buf, dv: new DataView(buf.buffer, buf.byteOffset, buf.byteLength) };
}

interface Region {
  index: number;
  flags: number;
  size: bigint;
  offset: bigint;
}

function regionInfo(deviceFd: number, index: number): Region {
  const { buf, dv } = u32Buf(8);
  dv.setUint32(0, 32, true);
  dv.setUint32(8, index, true);
  native.ioctl(deviceFd, VFIO_DEVICE_GET_REGION_INFO, buf);
  return { index, flags: dv.getUint32(4, true), size: dv.getBigUint64(16, true), offset: dv.getBigUint64(24, true) };
}

function irqCount(deviceFd: number, index: number): number {
  const { buf, dv } = u32Buf(4);
  dv.setUint32(0, 16, true);
  dv.setUint32(8, index, true);
  native.ioctl(deviceFd, VFIO_DEVICE_GET_IRQ_INFO, buf);
  return dv.getUint32(12, true);
}

function setIrqs(deviceFd: number, index: number, flags: number, fds: readonly number[]): void {
  const { buf, dv } = u32Buf(5 + fds.length);
  dv.setUint32(0, 20 + 4 * fds.length, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, index, true);
  dv.setUint32(12, 0, true);
  dv.setUint32(16, fds.length, true);
  fds.forEach((fd, i) => dv.setInt32(20 + 4 * i, fd, true));
  native.ioctl(deviceFd, VFIO_DEVICE_SET_IRQS, buf);
}

/** VFIO_DEVICE_IOEVENTFD: a write to `fd` makes the kernel write `data` (32 bits) at `offset`; fd -1 removes it. */
function ioeventfd(deviceFd: number, offset: bigint, data: number, fd: number): void {
  const { buf, dv } = u32Buf(8);
  dv.setUint32(0, 32, true);
  dv.setUint32(4, VFIO_DEVICE_IOEVENTFD_32, true);
  dv.setBigUint64(8, offset, true);
  dv.setBigUint64(16, BigInt(data), true);
  dv.setInt32(24, fd, true);
  native.ioctl(deviceFd, VFIO_DEVICE_IOEVENTFD, buf);
}

function getDeviceFd(groupFd: number, bdf: string): { fd: number; retries: number } {
  const name = Buffer.from(`${bdf}\0`);
  const deadline = Date.now() + 5_000;
  for (let retries = 0; ; retries++) {
    try {
      return { fd: native.ioctl(groupFd, VFIO_GROUP_GET_DEVICE_FD, name), retries };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if ((code !== 'ENODEV' && code !== 'EAGAIN') || Date.now() > deadline) throw err;
      sleepSync(1);
    }
  }
}

const NO_MASTER_WAIT_MS = 3_000;

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? '20');
  const busMaster = process.argv[3] !== 'no-bus-master';
  const t0 = performance.now();
  const bdf = findDevice();
  const bindAttempts = bindVfio(bdf);
  const group = path.basename(fs.readlinkSync(`/sys/bus/pci/devices/${bdf}/iommu_group`));
  const tBind = performance.now();

  const container = fs.openSync('/dev/vfio/vfio', 'r+');
  const api = native.ioctl(container, VFIO_GET_API_VERSION, 0);
  if (api !== VFIO_API_VERSION) throw new Error(`VFIO API ${api}`);
  if (native.ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) !== 1) throw new Error('no TYPE1v2 IOMMU');
  const groupFd = fs.openSync(`/dev/vfio/${group}`, 'r+');
  const status = u32Buf(2);
  status.dv.setUint32(0, 8, true);
  native.ioctl(groupFd, VFIO_GROUP_GET_STATUS, status.buf);
  if ((status.dv.getUint32(4, true) & VFIO_GROUP_FLAGS_VIABLE) === 0) throw new Error(`group ${group} not viable`);
  const containerArg = u32Buf(1);
  containerArg.dv.setInt32(0, container, true);
  native.ioctl(groupFd, VFIO_GROUP_SET_CONTAINER, containerArg.buf);
  native.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
  const { fd: deviceFd, retries: deviceFdRetries } = getDeviceFd(groupFd, bdf);

  const info = u32Buf(6);
  info.dv.setUint32(0, 24, true);
  native.ioctl(deviceFd, VFIO_DEVICE_GET_INFO, info.buf);
  const bar0 = regionInfo(deviceFd, VFIO_PCI_BAR0_REGION_INDEX);
  const bar2 = regionInfo(deviceFd, VFIO_PCI_BAR2_REGION_INDEX);
  const config = regionInfo(deviceFd, VFIO_PCI_CONFIG_REGION_INDEX);

  // vfio-pci clears Bus Master on every open of the device; MSI-X writes are DMA, so without
  // it interrupts silently never arrive.
  const cmd = Buffer.alloc(2);
  native.pread(deviceFd, cmd, config.offset + BigInt(PCI_COMMAND));
  const cmdBefore = cmd.readUInt16LE(0);
  if (busMaster) {
    cmd.writeUInt16LE(cmdBefore | PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY, 0);
    native.pwrite(deviceFd, cmd, config.offset + BigInt(PCI_COMMAND));
  }
  native.pread(deviceFd, cmd, config.offset + BigInt(PCI_COMMAND));
  const cmdAfter = cmd.readUInt16LE(0);

  const ivp = Buffer.alloc(4);
  native.pread(deviceFd, ivp, bar0.offset + BigInt(IVSHMEM_IVPOSITION));
  const ivPosition = ivp.readUInt32LE(0);

  const shm = native.mmap(deviceFd, Number(bar2.size), Number(bar2.offset), true);
  const msixCount = irqCount(deviceFd, VFIO_PCI_MSIX_IRQ_INDEX);
  const reqCount = irqCount(deviceFd, VFIO_PCI_REQ_IRQ_INDEX);
  const vectors: number[] = [];
  for (let v = 0; v < msixCount; v++) vectors.push(native.eventfd(0, EFD_NONBLOCK));
  setIrqs(deviceFd, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, vectors);
  const kickHost = native.eventfd(0, EFD_NONBLOCK);
  const doorbellOffset = bar0.offset + BigInt(IVSHMEM_DOORBELL);
  const kickData = (HOST_PEER << 16) | 0;
  ioeventfd(deviceFd, doorbellOffset, kickData, kickHost);
  const tSetup = performance.now();
  step('setup', {
    bdf,
    group,
    bindAttempts,
    deviceFdRetries,
    ivPosition,
    msixCount,
    reqCount,
    regions: info.dv.getUint32(8, true),
    irqs: info.dv.getUint32(12, true),
    bar0: { size: Number(bar0.size), offset: `0x${bar0.offset.toString(16)}` },
    bar2: { size: Number(bar2.size), offset: `0x${bar2.offset.toString(16)}` },
    command: { before: `0x${cmdBefore.toString(16)}`, after: `0x${cmdAfter.toString(16)}` },
    bindMs: Math.round(tBind - t0),
    setupMs: Math.round(tSetup - tBind),
  });

  // Shared memory both ways.
  const mem = new Uint8Array(shm);
  for (let i = 0; i < PATTERN_BYTES; i++) mem[i] = patternByte(ivPosition, i);
  let hostBad = -1;
  for (let i = 0; i < PATTERN_BYTES; i++) {
    if (mem[HOST_PATTERN_OFFSET + i] !== patternByte(HOST_PATTERN_SEED, i)) {
      hostBad = i;
      break;
    }
  }
  step('pattern', { written: PATTERN_BYTES, hostPatternFirstBad: hostBad });

  // Guest → host: once through the ioeventfd (peer 0, vector 0), once by an MMIO write of the
  // doorbell register through the device fd (peer 0, vector 1).
  native.eventfdWrite(kickHost, 1);
  const bell = Buffer.alloc(4);
  bell.writeUInt32LE((HOST_PEER << 16) | 1, 0);
  native.pwrite(deviceFd, bell, doorbellOffset);
  step('rang-host');

  // Host → guest: every vector once.
  const waiters = vectors.map((fd) => new EventfdWaiter(fd));
  step('armed');
  if (busMaster) {
    const counts = await Promise.all(waiters.map((w) => w.next()));
    step('vectors', { counts });
    // Ping-pong: host rings vector 1, we answer through the ioeventfd.
    const w1 = waiters[1]!;
    for (let i = 0; i < rounds; i++) {
      await w1.next();
      native.eventfdWrite(kickHost, 1);
    }
    step('pingpong', { rounds });
  } else {
    await new Promise((r) => setTimeout(r, NO_MASTER_WAIT_MS));
    step('vectors', { counts: waiters.map((w) => w.total), waitedMs: NO_MASTER_WAIT_MS });
  }

  // Teardown, in an order that leaves the device reusable by the next open.
  for (const w of waiters) w.close();
  ioeventfd(deviceFd, doorbellOffset, kickData, -1);
  setIrqs(deviceFd, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, []);
  for (const fd of vectors) native.close(fd);
  native.close(kickHost);
  native.munmap(shm);
  native.close(deviceFd);
  fs.closeSync(groupFd);
  fs.closeSync(container);
  step('teardown', { mappings: native.mappingCount() });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    const e = err as { stack?: string; code?: string };
    step('error', { error: String(err), code: e.code ?? null, stack: e.stack ?? null });
    process.exit(1);
  },
);
