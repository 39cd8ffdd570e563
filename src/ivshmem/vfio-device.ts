/**
 * The Device of a real guest: an ivshmem-doorbell PCI device driven through VFIO
 * (docs/ivshmem.md §8). Shared memory is BAR2 of the device fd (mapped at the region's
 * offset), our interrupts are MSI-X vectors delivered to eventfds, and doorbells are
 * eventfds the kernel turns into a store to the Doorbell register (VFIO ioeventfds), so ring
 * code sees exactly what it sees on the host and in simulated guests.
 *
 * Opening is two steps so a caller can look before it commits: VfioDevice.probe() opens the
 * device and reads what identifies it (BAR size, MSI-X count, IVPosition and a snapshot of the
 * device header, docs/ivshmem.md §9) without touching interrupts; activate() turns it into a
 * Device. What the probe returns is data to validate, never to trust: shared memory is
 * writable by every peer.
 *
 * The ivshmem device does not tell a guest which peers exist: peers() is empty and no
 * peer-join/peer-leave events are emitted. A doorbell to a peer that is not there is dropped
 * by QEMU, as for any ivshmem guest.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { ClosedError, InvalidArgumentError, KvmchanError, fromSystemError } from '../errors.js';
import { native, EFD_NONBLOCK, READABLE, type Poller } from '../native.js';
import type { Device, DeviceEvents, DeviceShm } from './device.js';
import { MappingSet } from './mappings.js';
import { DEVICE_HEADER_SIZE, headerOffset, type DeviceFacts } from './device-header.js';
import * as io from './vfio/ioctl.js';
import { VfioPciDevice, type VfioOpenOptions } from './vfio/pci-device.js';

/** The host asked for the device back (device_del): it closed itself. */
export class DeviceRemovedError extends KvmchanError {
  constructor(message: string) {
    super(message, 'KVMCHAN_E_DEVICE_REMOVED');
    this.name = 'DeviceRemovedError';
  }
}

export interface VfioProbe {
  readonly bdf: string;
  readonly facts: DeviceFacts;
  /** A private copy of the device header page's first DEVICE_HEADER_SIZE bytes. */
  readonly header: Buffer;
  /** Commit: set up interrupts and doorbells and return the Device. */
  activate(log?: Logger): VfioDevice;
  /** Give the device up (close the fds) without activating it. */
  close(): void;
}

export interface VfioDeviceStats {
  /** Doorbells backed by a VFIO ioeventfd (the kernel writes the register). */
  ioeventfds: number;
  /** Doorbells relayed by this process (IOEVENTFD not offered, or the per-device limit reached). */
  relayed: number;
}

interface Doorbell {
  fd: number;
  /** Set when this process relays it (no kernel ioeventfd). */
  poller: Poller | null;
}

export class VfioDevice extends EventEmitter<DeviceEvents> implements Device {
  readonly bdf: string;
  readonly ivPosition: number;
  readonly vectors: number;
  readonly shm: DeviceShm;
  readonly #pci: VfioPciDevice;
  readonly #maps: MappingSet;
  readonly #log: Logger | undefined;
  readonly #interrupts: number[] = [];
  readonly #doorbells = new Map<number, Doorbell>();
  #ioeventfdUsable = true;
  #ioeventfds = 0;
  #reqFd = -1;
  #reqPoller: Poller | null = null;
  #closed = false;

  /** Open `bdf` through VFIO (binding it to vfio-pci) and read what identifies it. */
  static async probe(bdf: string, opts: VfioOpenOptions = {}): Promise<VfioProbe> {
    const pci = await VfioPciDevice.open(bdf, opts);
    try {
      const msix = pci.irqInfo(io.VFIO_PCI_MSIX_IRQ_INDEX);
      const size = pci.bar2.size;
      if ((pci.bar2.flags & io.VFIO_REGION_INFO_FLAG_MMAP) === 0)
        throw new KvmchanError(`vfio: BAR2 of ${bdf} cannot be mapped`, 'KVMCHAN_E_VFIO');
      if (size < 4096 || (size & (size - 1)) !== 0)
        throw new KvmchanError(`vfio: BAR2 of ${bdf} has ${size} bytes, not a power of two ≥ 4096`, 'KVMCHAN_E_VFIO');
      if (pci.bar0.size < 16) throw new KvmchanError(`vfio: BAR0 of ${bdf} has ${pci.bar0.size} bytes`, 'KVMCHAN_E_VFIO');
      const facts: DeviceFacts = {
        size,
        vectors: msix?.count ?? 0,
        ivPosition: pci.readU32(pci.bar0, io.IVSHMEM_IV_POSITION),
      };
      const header = pci.read(pci.bar2, headerOffset(size), DEVICE_HEADER_SIZE);
      let used = false;
      return {
        bdf,
        facts,
        header,
        activate: (log?: Logger): VfioDevice => {
          if (used) throw new InvalidArgumentError('probe already used');
          used = true;
          return new VfioDevice(pci, facts, log);
        },
        close: (): void => {
          if (!used) {
            used = true;
            pci.close();
          }
        },
      };
    } catch (err) {
      pci.close();
      throw err;
    }
  }

  /** probe() + activate(), for callers that know which device they want. */
  static async open(bdf: string, opts: VfioOpenOptions & { log?: Logger } = {}): Promise<VfioDevice> {
    return (await VfioDevice.probe(bdf, opts)).activate(opts.log);
  }

  private constructor(pci: VfioPciDevice, facts: DeviceFacts, log: Logger | undefined) {
    super();
    this.bdf = pci.bdf;
    this.#pci = pci;
    this.#log = log?.child({ component: 'vfio', bdf: pci.bdf });
    this.ivPosition = facts.ivPosition;
    this.vectors = facts.vectors;
    this.shm = { fd: pci.fd, size: facts.size, offset: pci.bar2.offset };
    this.#maps = new MappingSet(pci.fd, facts.size, pci.bar2.offset);
    try {
      if (facts.vectors < 1) throw new KvmchanError(`vfio: ${pci.bdf} has no MSI-X vectors`, 'KVMCHAN_E_VFIO');
      // vfio-pci clears Bus Master on every open; without it MSI-X silently never arrives.
      const cmd = pci.enableBusMaster();
      if ((cmd.after & io.PCI_COMMAND_MASTER) === 0)
        throw new KvmchanError(`vfio: cannot enable bus mastering on ${pci.bdf}`, 'KVMCHAN_E_VFIO');
      for (let v = 0; v < facts.vectors; v++) this.#interrupts.push(native.eventfd(0, EFD_NONBLOCK));
      pci.setIrqEventfds(io.VFIO_PCI_MSIX_IRQ_INDEX, this.#interrupts);
      this.#armRequest();
    } catch (err) {
      this.#teardown();
      throw err instanceof KvmchanError ? err : fromSystemError(err, `vfio: cannot set up ${pci.bdf}`);
    }
    this.#log?.debug({ ivPosition: this.ivPosition, vectors: this.vectors, size: facts.size, mode: pci.mode }, 'vfio device ready');
  }

  /** REQ interrupt: the host wants the device back (device_del). Not every kernel has it. */
  #armRequest(): void {
    const req = this.#pci.irqInfo(io.VFIO_PCI_REQ_IRQ_INDEX);
    if (req === null || req.count < 1) return;
    this.#reqFd = native.eventfd(0, EFD_NONBLOCK);
    this.#pci.setIrqEventfds(io.VFIO_PCI_REQ_IRQ_INDEX, [this.#reqFd]);
    this.#reqPoller = new native.Poller(this.#reqFd, () => {
      if (this.#closed) return;
      native.eventfdRead(this.#reqFd);
      this.#log?.info('the host requests the device back: releasing it');
      this.#teardown();
      this.emit('close', new DeviceRemovedError(`${this.bdf}: the host is removing the device`));
    });
    this.#reqPoller.start(READABLE);
    this.#reqPoller.unref();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** PCI mode the device runs in. */
  get mode(): 'iommu' | 'noiommu' {
    return this.#pci.mode;
  }

  get stats(): VfioDeviceStats {
    let relayed = 0;
    for (const d of this.#doorbells.values()) if (d.poller !== null) relayed++;
    return { ioeventfds: this.#ioeventfds, relayed };
  }

  map(offset?: number, length?: number, writable?: boolean): ArrayBuffer {
    this.#checkOpen();
    return this.#maps.map(offset, length, writable);
  }

  unmap(buffer: ArrayBuffer): void {
    this.#maps.unmap(buffer);
  }

  interruptFd(vector: number): number {
    this.#checkOpen();
    const fd = Number.isInteger(vector) ? this.#interrupts[vector] : undefined;
    if (fd === undefined) throw new InvalidArgumentError(`interruptFd: vector ${vector} not in [0, ${this.#interrupts.length})`);
    return fd;
  }

  /**
   * An eventfd that rings (peerId, vector), created on first use: a VFIO ioeventfd (the kernel
   * stores (peer << 16) | vector into the Doorbell register), or where the kernel does not offer
   * that (or its per-device limit is reached) an eventfd this process relays with a write.
   */
  doorbellFd(peerId: number, vector: number): number | null {
    if (this.#closed) return null;
    if (!validDoorbell(peerId, vector)) return null;
    const key = io.doorbellValue(peerId, vector);
    const have = this.#doorbells.get(key);
    if (have !== undefined) return have.fd;
    const fd = native.eventfd(0, EFD_NONBLOCK);
    if (this.#ioeventfdUsable && this.#ioeventfds < io.VFIO_MAX_IOEVENTFDS) {
      try {
        this.#pci.ioeventfd(this.#pci.bar0, io.IVSHMEM_DOORBELL, key, fd);
        this.#ioeventfds++;
        this.#doorbells.set(key, { fd, poller: null });
        return fd;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'ENOTTY' || code === 'EINVAL' || code === 'ENOSPC') {
          if (code !== 'ENOSPC') this.#ioeventfdUsable = false;
          this.#log?.info({ code }, 'VFIO ioeventfd not available: doorbells are relayed by this process');
        } else {
          native.close(fd);
          throw fromSystemError(err, `vfio: ioeventfd for peer ${peerId} vector ${vector}`);
        }
      }
    }
    const poller = new native.Poller(fd, () => {
      if (this.#closed) return;
      if (native.eventfdRead(fd) !== null) this.#ring(key);
    });
    poller.start(READABLE);
    poller.unref();
    this.#doorbells.set(key, { fd, poller });
    return fd;
  }

  /** Ring (peerId, vector) with a store to the Doorbell register. Unknown ranges are dropped. */
  doorbell(peerId: number, vector: number): void {
    if (this.#closed || !validDoorbell(peerId, vector)) return;
    this.#ring(io.doorbellValue(peerId, vector));
  }

  #ring(value: number): void {
    this.#pci.writeU32(this.#pci.bar0, io.IVSHMEM_DOORBELL, value);
  }

  peers(): number[] {
    return [];
  }

  /** Always 0: a guest does not learn other peers' vector counts. */
  peerVectors(): number {
    return 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#teardown();
    this.emit('close', null);
  }

  /** Order that lets the host's device_del complete: ioeventfds, IRQs, eventfds, mappings, fds. */
  #teardown(): void {
    if (this.#closed) return;
    this.#closed = true;
    const quiet = (f: () => void): void => {
      try {
        f();
      } catch (err) {
        this.#log?.debug({ err: (err as Error).message }, 'vfio teardown step failed');
      }
    };
    for (const [key, d] of this.#doorbells) {
      if (d.poller === null)
        quiet(() => {
          this.#pci.ioeventfd(this.#pci.bar0, io.IVSHMEM_DOORBELL, key, -1);
        });
    }
    if (!this.#pci.closed) {
      quiet(() => {
        this.#pci.disableIrq(io.VFIO_PCI_MSIX_IRQ_INDEX);
      });
      if (this.#reqFd >= 0)
        quiet(() => {
          this.#pci.disableIrq(io.VFIO_PCI_REQ_IRQ_INDEX);
        });
    }
    this.#reqPoller?.close();
    for (const d of this.#doorbells.values()) {
      d.poller?.close();
      quiet(() => {
        native.close(d.fd);
      });
    }
    this.#doorbells.clear();
    if (this.#reqFd >= 0)
      quiet(() => {
        native.close(this.#reqFd);
      });
    this.#reqFd = -1;
    for (const fd of this.#interrupts)
      quiet(() => {
        native.close(fd);
      });
    this.#interrupts.length = 0;
    this.#maps.unmapAll();
    this.#pci.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw new ClosedError('vfio device closed');
  }
}

function validDoorbell(peerId: number, vector: number): boolean {
  return Number.isInteger(peerId) && peerId >= 0 && peerId <= 0xffff && Number.isInteger(vector) && vector >= 0 && vector <= 0xffff;
}
