/**
 * One PCI device opened through VFIO (docs/ivshmem.md §8.2): container, group and device fds,
 * region and IRQ information, register access, IRQ eventfds and ioeventfds. Knows nothing about
 * ivshmem semantics beyond register offsets; VfioDevice (../vfio-device.ts) builds the Device on it.
 */
import fs from 'node:fs';
import { fromSystemError, KvmchanError, TimeoutError } from '../../errors.js';
import { native } from '../../native.js';
import * as io from './ioctl.js';
import { bindVfioPci, groupNode, iommuMode, type IommuMode, type SysfsPaths } from './sysfs.js';

export interface VfioOpenOptions extends SysfsPaths {
  /** Deadline for binding and for GROUP_GET_DEVICE_FD after a hot-plug. Default 5000 ms. */
  timeoutMs?: number;
  /** Override the mode (default: iommuMode()). */
  mode?: IommuMode;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function errCode(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

function openRw(p: string): number {
  try {
    // libuv opens every file close-on-exec.
    return fs.openSync(p, 'r+');
  } catch (err) {
    throw fromSystemError(err, `vfio: cannot open ${p}`);
  }
}

export class VfioPciDevice {
  readonly bdf: string;
  readonly mode: IommuMode;
  readonly bar0: io.RegionInfo;
  readonly bar2: io.RegionInfo;
  readonly config: io.RegionInfo;
  #container: number;
  #group: number;
  #device: number;
  #closed = false;

  private constructor(bdf: string, mode: IommuMode, container: number, group: number, device: number) {
    this.bdf = bdf;
    this.mode = mode;
    this.#container = container;
    this.#group = group;
    this.#device = device;
    this.bar0 = this.regionInfo(io.VFIO_PCI_BAR0_REGION_INDEX);
    this.bar2 = this.regionInfo(io.VFIO_PCI_BAR2_REGION_INDEX);
    this.config = this.regionInfo(io.VFIO_PCI_CONFIG_REGION_INDEX);
  }

  /** Bind to vfio-pci if needed and open container, group and device. */
  static async open(bdf: string, opts: VfioOpenOptions = {}): Promise<VfioPciDevice> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const mode = opts.mode ?? iommuMode(opts);
    await bindVfioPci(bdf, { ...opts, timeoutMs });
    const fds: number[] = [];
    try {
      const container = openRw(`${opts.dev ?? '/dev'}/vfio/vfio`);
      fds.push(container);
      const api = native.ioctl(container, io.VFIO_GET_API_VERSION, 0);
      if (api !== io.VFIO_API_VERSION)
        throw new KvmchanError(`vfio: API version ${api}, expected ${io.VFIO_API_VERSION}`, 'KVMCHAN_E_VFIO');
      const iommuType = mode === 'noiommu' ? io.VFIO_NOIOMMU_IOMMU : io.VFIO_TYPE1v2_IOMMU;
      if (native.ioctl(container, io.VFIO_CHECK_EXTENSION, iommuType) <= 0) {
        throw new KvmchanError(`vfio: the container does not offer IOMMU type ${iommuType} (${mode})`, 'KVMCHAN_E_VFIO');
      }
      const group = openRw(groupNode(bdf, mode, opts));
      fds.push(group);
      const status = io.encodeGroupStatus();
      native.ioctl(group, io.VFIO_GROUP_GET_STATUS, status);
      if ((io.decodeGroupStatus(status).flags & io.VFIO_GROUP_FLAGS_VIABLE) === 0) {
        throw new KvmchanError(
          `vfio: the IOMMU group of ${bdf} is not viable (another device of the group is bound to a host driver)`,
          'KVMCHAN_E_VFIO',
        );
      }
      const containerArg = Buffer.alloc(4);
      containerArg.writeInt32LE(container, 0);
      native.ioctl(group, io.VFIO_GROUP_SET_CONTAINER, containerArg);
      native.ioctl(container, io.VFIO_SET_IOMMU, iommuType);
      const device = await getDeviceFd(group, bdf, timeoutMs);
      fds.push(device);
      return new VfioPciDevice(bdf, mode, container, group, device);
    } catch (err) {
      for (const fd of fds.reverse()) native.close(fd);
      throw err instanceof KvmchanError ? err : fromSystemError(err, `vfio: cannot open ${bdf}`);
    }
  }

  /** The device fd (mmap/pread/pwrite at a region's offset). Owned by this object. */
  get fd(): number {
    return this.#device;
  }

  get closed(): boolean {
    return this.#closed;
  }

  regionInfo(index: number): io.RegionInfo {
    const b = io.encodeRegionInfo(index);
    native.ioctl(this.#device, io.VFIO_DEVICE_GET_REGION_INFO, b);
    return io.decodeRegionInfo(b);
  }

  /** IRQ info of `index`, or null when the device does not have that index (EINVAL). */
  irqInfo(index: number): io.IrqInfo | null {
    const b = io.encodeIrqInfo(index);
    try {
      native.ioctl(this.#device, io.VFIO_DEVICE_GET_IRQ_INFO, b);
    } catch (err) {
      if (errCode(err) === 'EINVAL') return null;
      throw fromSystemError(err, 'vfio: GET_IRQ_INFO');
    }
    return io.decodeIrqInfo(b);
  }

  read(region: io.RegionInfo, offset: number, length: number): Buffer {
    const b = Buffer.alloc(length);
    const n = native.pread(this.#device, b, region.offset + offset);
    if (n !== length)
      throw new KvmchanError(`vfio: short read of ${n}/${length} bytes at region ${region.index}+${offset}`, 'KVMCHAN_E_VFIO');
    return b;
  }

  write(region: io.RegionInfo, offset: number, data: Uint8Array): void {
    const n = native.pwrite(this.#device, data, region.offset + offset);
    if (n !== data.byteLength)
      throw new KvmchanError(`vfio: short write of ${n}/${data.byteLength} bytes at region ${region.index}+${offset}`, 'KVMCHAN_E_VFIO');
  }

  readU32(region: io.RegionInfo, offset: number): number {
    return this.read(region, offset, 4).readUInt32LE(0);
  }

  writeU32(region: io.RegionInfo, offset: number, value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0, 0);
    this.write(region, offset, b);
  }

  /** Set Bus Master Enable: vfio-pci clears it on every open, and MSI-X never arrives without it. */
  enableBusMaster(): { before: number; after: number } {
    const cmd = this.read(this.config, io.PCI_COMMAND, 2).readUInt16LE(0);
    const b = Buffer.alloc(2);
    b.writeUInt16LE(cmd | io.PCI_COMMAND_MASTER, 0);
    this.write(this.config, io.PCI_COMMAND, b);
    return { before: cmd, after: this.read(this.config, io.PCI_COMMAND, 2).readUInt16LE(0) };
  }

  setIrqEventfds(index: number, fds: readonly number[]): void {
    native.ioctl(this.#device, io.VFIO_DEVICE_SET_IRQS, io.encodeIrqSetEventfds(index, 0, fds));
  }

  disableIrq(index: number): void {
    native.ioctl(this.#device, io.VFIO_DEVICE_SET_IRQS, io.encodeIrqDisable(index));
  }

  /** Register (fd ≥ 0) or remove (fd -1) a 4-byte ioeventfd storing `data` at region+offset. */
  ioeventfd(region: io.RegionInfo, offset: number, data: number, fd: number): void {
    native.ioctl(this.#device, io.VFIO_DEVICE_IOEVENTFD, io.encodeIoeventfd(region.offset + offset, data, fd));
  }

  /** Close device, group and container fds (the caller turned IRQs off and unmapped first). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fd of [this.#device, this.#group, this.#container]) {
      try {
        native.close(fd);
      } catch {
        // already gone
      }
    }
    this.#device = this.#group = this.#container = -1;
  }
}

/**
 * GROUP_GET_DEVICE_FD, retried every ~1 ms until the deadline: right after a hot-plug it
 * fails ENODEV (the driver link exists before probe finished) or EAGAIN (the reset done on
 * open cannot take the device lock yet).
 */
async function getDeviceFd(group: number, bdf: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  const name = io.encodeDeviceName(bdf);
  for (;;) {
    try {
      return native.ioctl(group, io.VFIO_GROUP_GET_DEVICE_FD, name);
    } catch (err) {
      const code = errCode(err);
      if (code !== 'ENODEV' && code !== 'EAGAIN') throw fromSystemError(err, `vfio: GROUP_GET_DEVICE_FD ${bdf}`);
      if (Date.now() > deadline) throw new TimeoutError(`vfio: ${bdf} not ready after ${timeoutMs} ms (${code})`);
      await sleep(1);
    }
  }
}
