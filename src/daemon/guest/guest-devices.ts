/**
 * Where a guest daemon's devices come from (docs/ivshmem.md §8-§9), behind one interface so
 * the guest service does not care:
 *  - SocketDevices: simulated guests, one ivshmem socket per device in a device directory
 *    (`kvmchand --guest --device-dir <dir>`); the socket a device is reached on says which it is;
 *  - VfioDevices: a real VM, ivshmem-doorbell PCI devices driven through VFIO
 *    (`kvmchand --guest`), recognised by their device header, validated against what the guest
 *    knows independently and, for pools, by a tag made with this guest's device key.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Device } from '../../ivshmem/device.js';
import { SocketDevice } from '../../ivshmem/socket-device.js';
import { VfioDevice, type VfioProbe } from '../../ivshmem/vfio-device.js';
import { controlMismatch, decodeDeviceHeader, poolMismatch, type DeviceHeader } from '../../ivshmem/device-header.js';
import { iommuMode, listIvshmemDevices, type SysfsPaths } from '../../ivshmem/vfio/sysfs.js';
import { KvmchanError, TimeoutError } from '../../errors.js';
import type { PoolAddedEvent } from '../../protocol/types.js';

export interface GuestDevices {
  readonly kind: 'socket' | 'vfio';
  /** Find and attach to the control device (IVPosition 1, 1 vector). */
  control(timeoutMs: number): Promise<Device>;
  /** Find and attach to an announced pool. */
  pool(announcement: PoolAddedEvent, timeoutMs: number): Promise<Device>;
}

export class DeviceNotFoundError extends KvmchanError {
  constructor(message: string) {
    super(message, 'KVMCHAN_E_NO_DEVICE');
    this.name = 'DeviceNotFoundError';
  }
}

export class SocketDevices implements GuestDevices {
  readonly kind = 'socket';
  readonly #dir: string;
  readonly #log: Logger;

  constructor(deviceDir: string, log: Logger) {
    this.#dir = deviceDir;
    this.#log = log;
  }

  control(timeoutMs: number): Promise<Device> {
    return SocketDevice.connect(path.join(this.#dir, 'control.sock'), { vectors: 1, timeoutMs, log: this.#log });
  }

  pool(p: PoolAddedEvent, timeoutMs: number): Promise<Device> {
    // Only a plain file name inside our device directory: the host does not choose paths for us.
    if (p.socket.includes('/') || p.socket.startsWith('.') || p.socket === '') {
      return Promise.reject(new DeviceNotFoundError(`pool ${p.pool}: suspicious socket name ${JSON.stringify(p.socket)}`));
    }
    return SocketDevice.connect(path.join(this.#dir, p.socket), { vectors: p.vectors, timeoutMs, log: this.#log });
  }
}

export interface VfioDevicesOptions extends SysfsPaths {
  log: Logger;
  /** Pause between scans while a device has not appeared yet. Default 100 ms. */
  scanIntervalMs?: number;
}

interface Seen {
  bdf: string;
  header: DeviceHeader | null;
  why: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class VfioDevices implements GuestDevices {
  readonly kind = 'vfio';
  readonly #opts: VfioDevicesOptions;
  readonly #log: Logger;
  /** BDFs of devices we hold (never probed again while open). */
  readonly #claimed = new Set<string>();
  #key: Buffer | null = null;
  /** One scan at a time: two probes of one device would fight over its group. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: VfioDevicesOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'vfio-devices' });
  }

  /** Fails at once with KVMCHAN_E_NO_IOMMU when the guest has neither an IOMMU nor no-IOMMU mode. */
  control(timeoutMs: number): Promise<Device> {
    const mode = iommuMode(this.#opts);
    this.#log.info({ mode }, 'looking for the control device over VFIO');
    return this.#serial(async () => {
      const { dev, header } = await this.#find('control device', timeoutMs, (h, probe) => controlMismatch(h, probe.facts));
      // Validated on this very probe: the key checks the tags of our pools from now on.
      this.#key = header.key ?? null;
      return dev;
    });
  }

  pool(p: PoolAddedEvent, timeoutMs: number): Promise<Device> {
    const key = this.#key;
    if (key === null) return Promise.reject(new DeviceNotFoundError('no control device yet: no device key to check pools with'));
    const want = { pool: p.pool, peerId: p.peerId, vectors: p.vectors, size: p.size };
    return this.#serial(
      async () => (await this.#find(`pool ${p.pool}`, timeoutMs, (h, probe) => poolMismatch(h, probe.facts, want, key))).dev,
    );
  }

  #serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(f, f);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Scan until exactly one unclaimed device matches. Every candidate is opened, its header
   * read once into private memory and validated; non-matching ones are closed again. Two
   * matches (a peer copied a genuine header into another device) is refused, never guessed.
   */
  async #find(
    what: string,
    timeoutMs: number,
    mismatch: (h: DeviceHeader, probe: VfioProbe) => string | null,
  ): Promise<{ dev: VfioDevice; header: DeviceHeader }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen: Seen[] = [];
      const matches: { probe: VfioProbe; header: DeviceHeader }[] = [];
      for (const c of listIvshmemDevices(this.#opts)) {
        if (this.#claimed.has(c.bdf)) continue;
        if (c.driver !== null && c.driver !== 'vfio-pci') {
          seen.push({ bdf: c.bdf, header: null, why: `bound to ${c.driver}, left alone` });
          continue;
        }
        let probe: VfioProbe;
        try {
          probe = await VfioDevice.probe(c.bdf, { ...this.#opts, timeoutMs: Math.max(100, deadline - Date.now()) });
        } catch (err) {
          seen.push({ bdf: c.bdf, header: null, why: `cannot open: ${(err as Error).message}` });
          continue;
        }
        let header: DeviceHeader | null = null;
        let why: string | null;
        try {
          header = decodeDeviceHeader(probe.header);
          why = mismatch(header, probe);
        } catch (err) {
          why = (err as Error).message;
        }
        seen.push({ bdf: c.bdf, header, why: why ?? 'match' });
        if (why === null && header !== null) {
          matches.push({ probe, header });
        } else {
          probe.close();
        }
      }
      if (matches.length === 1) {
        const { probe, header } = matches[0]!;
        const dev = probe.activate(this.#log);
        this.#claimed.add(dev.bdf);
        dev.once('close', () => this.#claimed.delete(dev.bdf));
        this.#log.info(
          { what, bdf: dev.bdf, size: dev.shm.size, vectors: dev.vectors, ivPosition: dev.ivPosition, mode: dev.mode },
          'device attached',
        );
        return { dev, header };
      }
      for (const m of matches) m.probe.close();
      if (matches.length > 1) {
        throw new DeviceNotFoundError(
          `${what}: ${matches.length} devices claim to be it (${seen
            .filter((s) => s.why === 'match')
            .map((s) => s.bdf)
            .join(', ')}); refusing all`,
        );
      }
      if (Date.now() >= deadline) {
        const detail = seen.map((s) => `${s.bdf}: ${s.why}`).join('; ') || 'no ivshmem-doorbell device (1af4:1110) in sysfs';
        throw new TimeoutError(`${what} not found over VFIO within ${timeoutMs} ms (${detail})`);
      }
      await sleep(Math.min(this.#opts.scanIntervalMs ?? 100, Math.max(1, deadline - Date.now())));
    }
  }
}
