/**
 * The simulated VMM backend (docs/architecture.md, docs/pools.md §7): guests are ordinary host processes
 * (guest daemons run with `--guest --device-dir <runtimeDir>/domains/<id>`) that
 * connect to our ivshmem sockets exactly as QEMU's ivshmem-doorbell would. For
 * each guest this backend provides what a real VM gets at start: its device
 * directory and a **control device** (256 KiB, 1 vector, the host as peer 0, the
 * guest on `control.sock` with the fixed IVPosition 1). Pools are the pool
 * manager's business (src/daemon/pools/pool-manager.ts).
 *
 * Simulated domains exist from construction until close(); addDomain/removeDomain
 * let tests (and a future CLI) make guests appear and vanish like VMs do.
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { Logger } from 'pino';
import type { IvshmemServer } from '../../ivshmem/server.js';
import { InvalidArgumentError } from '../../errors.js';
import type { GuestVmm, Vmm, VmmDomain, VmmEvents } from './vmm.js';
import { removeDomainDirIfEmpty, removeDomainsRootIfEmpty } from './domain-dir.js';
import { createControlDevice } from './control-device.js';

export interface SimulatedVmmOptions {
  runtimeDir: string;
  guests: readonly VmmDomain[];
  log?: Logger;
}

export type SimulatedVmmEvents = VmmEvents;

interface SimGuest {
  domain: VmmDomain;
  dir: string;
  control: IvshmemServer;
}

/** Guests `1..n` named `sim-<id>` (the `--simulate-guests N` convention). */
export function simulatedGuests(n: number): VmmDomain[] {
  return Array.from({ length: n }, (_, i) => ({ id: i + 1, name: `sim-${i + 1}` }));
}

export class SimulatedVmm extends EventEmitter<SimulatedVmmEvents> implements Vmm, GuestVmm {
  readonly kind = 'simulated';
  readonly runtimeDir: string;
  readonly #log: Logger | undefined;
  readonly #guests = new Map<number, SimGuest>();
  #closed = false;

  constructor(opts: SimulatedVmmOptions) {
    super();
    this.runtimeDir = path.resolve(opts.runtimeDir);
    this.#log = opts.log?.child({ component: 'vmm', backend: 'simulated' });
    try {
      for (const d of opts.guests) this.#create(d);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  domains(): VmmDomain[] {
    return [...this.#guests.values()].map((g) => ({ ...g.domain })).sort((a, b) => a.id - b.id);
  }

  /** The guest's control device (its `host` is the host peer the guest link runs on). */
  controlDevice(domain: number): IvshmemServer {
    const g = this.#guests.get(domain);
    if (g === undefined) throw new InvalidArgumentError(`no simulated domain ${domain}`);
    return g.control;
  }

  /** `<runtimeDir>/domains/<id>/`: what a simulated guest daemon gets as --device-dir. */
  deviceDir(domain: number): string {
    const g = this.#guests.get(domain);
    if (g === undefined) throw new InvalidArgumentError(`no simulated domain ${domain}`);
    return g.dir;
  }

  has(domain: number): boolean {
    return this.#guests.has(domain);
  }

  /** A guest "starts": device directory and control device now, then 'domain-added'. */
  addDomain(d: VmmDomain): void {
    if (this.#closed) throw new InvalidArgumentError('simulated VMM is closed');
    this.#create(d);
    this.emit('domain-added', { ...d });
  }

  /**
   * A guest "stops": its control device goes (the guest daemon sees EOF, as when
   * QEMU exits), then 'domain-removed' (listeners close its pools), then its
   * directory if nothing is left in it.
   */
  removeDomain(id: number): boolean {
    const g = this.#guests.get(id);
    if (g === undefined) return false;
    this.#guests.delete(id);
    g.control.close();
    this.#log?.info({ domain: id, domainName: g.domain.name }, 'simulated guest removed');
    this.emit('domain-removed', { ...g.domain });
    removeDomainDirIfEmpty(this.runtimeDir, id);
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const g of this.#guests.values()) {
      g.control.close();
      removeDomainDirIfEmpty(this.runtimeDir, g.domain.id);
    }
    this.#guests.clear();
    removeDomainsRootIfEmpty(this.runtimeDir);
  }

  #create(d: VmmDomain): void {
    if (!Number.isInteger(d.id) || d.id < 1 || d.id > 0x7fffffff) {
      throw new InvalidArgumentError(`simulated domain id must be in [1, 2^31), got ${d.id}`);
    }
    if (typeof d.name !== 'string' || d.name.length === 0) throw new InvalidArgumentError(`simulated domain ${d.id} needs a name`);
    for (const g of this.#guests.values()) {
      if (g.domain.id === d.id) throw new InvalidArgumentError(`duplicate simulated domain id ${d.id}`);
      if (g.domain.name === d.name) throw new InvalidArgumentError(`duplicate simulated domain name ${d.name}`);
    }
    const {
      dir,
      socketPath,
      server: control,
    } = createControlDevice({
      runtimeDir: this.runtimeDir,
      domain: d.id,
      log: this.#log,
      onJoin: () => this.emit('control-join', d.id),
      onLeave: (reason) => this.emit('control-leave', d.id, reason),
    });
    this.#guests.set(d.id, { domain: { id: d.id, name: d.name }, dir, control });
    this.#log?.info({ domain: d.id, domainName: d.name, socket: socketPath }, 'simulated guest ready');
  }
}
