/**
 * The QMP VMM backend (docs/vms-qmp.md): plain QEMU VMs, no libvirt. The user names each VM
 * and its QMP socket (configuration `vms`, or `kvmchan vm add` at run time); the VM gets a
 * stable domain id (vm-state.ts). For each VM this backend:
 *
 * 1. connects to its QMP socket (retrying while QEMU is not there), checks the VM carries no
 *    kvmchan devices of an earlier daemon, and that it has room for a control device and a
 *    first pool (placement.ts), refusing with an error that names the fix otherwise;
 * 2. creates the control device (control-device.ts) and hot-plugs it: `chardev-add` a socket
 *    chardev connecting to our ivshmem socket, then `device_add ivshmem-doorbell` (`vectors`,
 *    `ioeventfd=on`, id `kvmchan-ctl`) — our server is already listening, so QEMU reads its
 *    opening messages at once;
 * 3. emits `domain-added`; every pool the pool manager creates for the domain is hot-plugged
 *    the same way (`plugPool`, id `kvmchan-pool-<pool>`);
 * 4. notices the VM's end (QMP EOF, or a SHUTDOWN event) and emits `domain-removed`, then waits
 *    for a QEMU on the same socket again.
 *
 * Devices are never unplugged and their chardevs never removed from a running VM (QEMU 7.2
 * under TCG was seen to crash after that once new fds became readable): a pool retired while
 * its VM runs stays plugged, inert, until the VM stops; a VM still carrying devices of an
 * earlier daemon is adopted when the service manager's fd store gave us back that daemon's fds
 * for its devices (device-fds.ts: the same memory and eventfds, QEMU needs nothing new), and
 * otherwise refused until its QEMU restarts (docs/vms-qmp.md §"Restarts").
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { Logger } from 'pino';
import { KvmchanError, VmmError } from '../../../errors.js';
import type { IvshmemServer } from '../../../ivshmem/server.js';
import type { PoolAnnouncement } from '../../pools/pool-manager.js';
import type { GuestVmm, GuestVmmEvents, VmmDomain } from '../vmm.js';
import { watchedControlDevice, type ControlDevice } from '../control-device.js';
import { GUEST_CONTROL_PEER } from '../../guest-link/host-link.js';
import { removeDomainDirIfEmpty, removeDomainsRootIfEmpty } from '../domain-dir.js';
import { QmpClient } from './client.js';
import { machineKind, noPortError, ownedLeftovers, reserveNeeded, rootPorts, type MachineKind } from './placement.js';
import { VmState, vmSpecSchema, type VmSpec } from './vm-state.js';
import type { FdStore } from '../../fd-store.js';
import {
  CONTROL_DEVICE_NAME,
  adoptionFor,
  closeFds,
  closeStoredDevice,
  domainFdPrefix,
  poolDeviceName,
  type Adoption,
  type StoredDevice,
} from '../device-fds.js';

export const CONTROL_DEVICE_ID = CONTROL_DEVICE_NAME;
export const poolDeviceId = poolDeviceName;

export type VmStateName = 'connecting' | 'waiting' | 'serving' | 'refused';

export interface VmStatus {
  name: string;
  id: number;
  qmp: string;
  /** 'config' (configuration file) or 'runtime' (kvmchan vm add). */
  source: 'config' | 'runtime';
  /**
   * connecting: talking to QMP; waiting: no QEMU on the socket (retrying); serving: devices
   * plugged, domain live; refused: QEMU is there but cannot be served (see error).
   */
  state: VmStateName;
  machine: MachineKind | null;
  /** Device ids we plugged into the running VM. */
  devices: string[];
  /** Why the VM is not served, or the last hot-plug failure; null when none. */
  error: string | null;
  errorCode: string | null;
}

export interface QmpVmmOptions {
  runtimeDir: string;
  /** VMs from the configuration. */
  vms?: readonly VmSpec[];
  /** Pool size: a pool's root port needs pref64-reserve ≥ twice this. */
  poolSize: number;
  /** Domain ids other backends use (simulated guests). */
  reservedIds?: ReadonlySet<number>;
  /** Retry interval while a VM's QMP socket has no QEMU. Default 1000 ms. */
  retryMs?: number;
  /** Timeout of each QMP command. Default 10 s. */
  commandTimeoutMs?: number;
  /** The service manager's fd store: devices' fds to adopt running VMs with (device-fds.ts). */
  fdStore?: FdStore;
  log?: Logger;
}

interface Vm {
  spec: VmSpec;
  source: 'config' | 'runtime';
  id: number;
  state: VmStateName;
  machine: MachineKind | null;
  error: KvmchanError | null;
  client: QmpClient | null;
  control: ControlDevice | null;
  devices: string[];
  /** Serializes hot-plugs of one VM. */
  chain: Promise<void>;
  retry: NodeJS.Timeout | undefined;
  /** First attempt settled (for add()). */
  attempted: Promise<void>;
  removed: boolean;
  /** QEMU attached to the control device (it does at chardev-add, before we serve the VM). */
  controlJoined: boolean;
  /** Set while an adopted VM waits for the daemon to take it (takeAdoption). */
  adoption: Adoption | null;
}

function asKvmchanError(err: unknown): KvmchanError {
  return err instanceof KvmchanError ? err : new KvmchanError((err as Error).message ?? String(err), 'KVMCHAN_E_VMM');
}

export class QmpVmm extends EventEmitter<GuestVmmEvents> implements GuestVmm {
  readonly kind = 'qmp';
  readonly runtimeDir: string;
  readonly #state: VmState;
  readonly #log: Logger | undefined;
  readonly #poolSize: number;
  readonly #reserved: ReadonlySet<number>;
  readonly #retryMs: number;
  readonly #commandTimeoutMs: number;
  readonly #fdStore: FdStore | undefined;
  readonly #vms = new Map<string, Vm>();
  #closed = false;

  constructor(opts: QmpVmmOptions) {
    super();
    this.runtimeDir = path.resolve(opts.runtimeDir);
    this.#log = opts.log?.child({ component: 'vmm', backend: 'qmp' });
    this.#state = new VmState(this.runtimeDir, this.#log);
    this.#poolSize = opts.poolSize;
    this.#reserved = opts.reservedIds ?? new Set();
    this.#retryMs = opts.retryMs ?? 1000;
    this.#commandTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    this.#fdStore = opts.fdStore;
    for (const spec of opts.vms ?? []) this.#register(spec, 'config');
    for (const a of this.#state.added()) {
      if (this.#vms.has(a.name)) continue; // the configuration names it now
      try {
        this.#register(a, 'runtime');
      } catch (err) {
        this.#log?.error({ vm: a.name, err: (err as Error).message }, 'cannot follow a VM added at run time');
      }
    }
  }

  /** Start following every registered VM (after the daemon listens to our events). */
  start(): void {
    for (const vm of this.#vms.values()) this.#begin(vm);
  }

  domains(): VmmDomain[] {
    return [...this.#vms.values()]
      .filter((v) => v.state === 'serving')
      .map((v) => ({ id: v.id, name: v.spec.name }))
      .sort((a, b) => a.id - b.id);
  }

  has(domain: number): boolean {
    return this.#byDomain(domain)?.state === 'serving';
  }

  controlDevice(domain: number): IvshmemServer {
    const vm = this.#byDomain(domain);
    if (vm?.control == null) throw new VmmError(`no QMP domain ${domain} is served`, 'KVMCHAN_E_VMM_UNKNOWN');
    return vm.control.server;
  }

  /** Where `domain`'s device fds go in the fd store, while it is served. */
  fdPrefix(domain: number): string | undefined {
    const vm = this.#byDomain(domain);
    return vm?.state === 'serving' ? domainFdPrefix('qmp', vm.spec.name) : undefined;
  }

  /** Prefixes of every VM followed (their stored fds are claimed on their first QMP contact). */
  fdPrefixes(): string[] {
    return [...this.#vms.keys()].map((name) => domainFdPrefix('qmp', name));
  }

  /** An adopted VM's device key and pools, once (the daemon asks when the domain is added). */
  takeAdoption(domain: number): Adoption | undefined {
    const vm = this.#byDomain(domain);
    const a = vm?.adoption ?? undefined;
    if (vm !== undefined) vm.adoption = null;
    return a;
  }

  list(): VmStatus[] {
    return [...this.#vms.values()].sort((a, b) => a.id - b.id).map((v) => this.#status(v));
  }

  /**
   * Follow a VM from now on (`kvmchan vm add`); remembered across daemon restarts. Resolves
   * after the first attempt with the VM's status (which may be `waiting` or `refused`).
   */
  async add(spec: VmSpec): Promise<VmStatus> {
    if (this.#closed) throw new VmmError('the QMP backend is closed', 'KVMCHAN_E_VMM_UNKNOWN');
    const vm = this.#register(spec, 'runtime');
    this.#state.setAdded(vm.spec.name, vm.spec.qmp);
    this.#begin(vm);
    await vm.attempted;
    return this.#status(vm);
  }

  /**
   * Stop serving a VM and forget it (`kvmchan vm remove`): its domain is removed (vchans closed,
   * pools retired). Devices already plugged stay in the running VM, inert, until it stops.
   */
  remove(name: string): VmStatus {
    const vm = this.#vms.get(name);
    if (vm === undefined) throw new VmmError(`no VM named ${name}`, 'KVMCHAN_E_VMM_UNKNOWN');
    if (vm.source === 'config')
      throw new VmmError(`VM ${name} comes from the configuration file; remove it there and restart kvmchand`, 'KVMCHAN_E_VMM_CONFIG');
    const before = this.#status(vm);
    vm.removed = true;
    this.#vms.delete(name);
    this.#state.setAdded(name, null);
    this.#disconnect(vm, 'removed by request');
    this.#log?.info({ vm: name, domain: vm.id }, 'VM no longer followed');
    return { ...before, state: 'waiting', devices: [] };
  }

  plugPool(domain: number, a: PoolAnnouncement): void {
    const vm = this.#byDomain(domain);
    if (vm === undefined || vm.state !== 'serving') return;
    const client = vm.client;
    vm.chain = vm.chain
      .then(async () => {
        if (vm.client !== client || client === null) return;
        await this.#plug(
          vm,
          client,
          poolDeviceId(a.pool),
          a.socketPath,
          a.vectors,
          `pool ${a.pool} (${a.size >> 20} MiB)`,
          reserveNeeded(a.size),
        );
      })
      .catch((err: unknown) => {
        const e = asKvmchanError(err);
        vm.error = e;
        this.#log?.error({ vm: vm.spec.name, domain, pool: a.pool, err: e.message, code: e.code }, 'cannot hot-plug a pool');
      });
  }

  /** Stop following VMs. VMs keep running with their devices; no domain-removed is emitted. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const vm of this.#vms.values()) {
      clearTimeout(vm.retry);
      vm.removed = true;
      // Null first: the client's 'close' must not read as the VM going (its devices stay stored).
      const client = vm.client;
      vm.client = null;
      client?.close();
      vm.control?.server.close();
      if (vm.control !== null) removeDomainDirIfEmpty(this.runtimeDir, vm.id);
      vm.control = null;
    }
    this.#vms.clear();
    removeDomainsRootIfEmpty(this.runtimeDir);
  }

  // --- internals ---------------------------------------------------------------------------

  #register(raw: VmSpec, source: 'config' | 'runtime'): Vm {
    const parsed = vmSpecSchema.safeParse(raw);
    if (!parsed.success)
      throw new VmmError(
        `invalid VM: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
        'KVMCHAN_E_INVALID_ARG',
      );
    const spec = parsed.data;
    if (this.#vms.has(spec.name)) throw new VmmError(`a VM named ${spec.name} is already followed`, 'KVMCHAN_E_VMM_EXISTS');
    for (const v of this.#vms.values()) {
      if (v.spec.qmp === spec.qmp) throw new VmmError(`VM ${v.spec.name} already uses QMP socket ${spec.qmp}`, 'KVMCHAN_E_VMM_EXISTS');
      if (spec.id !== undefined && v.id === spec.id)
        throw new VmmError(`domain id ${spec.id} is already VM ${v.spec.name}'s`, 'KVMCHAN_E_VMM_EXISTS');
    }
    if (spec.id !== undefined && this.#reserved.has(spec.id))
      throw new VmmError(`domain id ${spec.id} is a simulated guest's`, 'KVMCHAN_E_VMM_EXISTS');
    const reserved = new Set([...this.#reserved, ...[...this.#vms.values()].map((v) => v.id)]);
    const id = this.#state.assign(spec.name, spec.id, reserved);
    const vm: Vm = {
      spec,
      source,
      id,
      state: 'waiting',
      machine: null,
      error: null,
      client: null,
      control: null,
      devices: [],
      chain: Promise.resolve(),
      retry: undefined,
      attempted: Promise.resolve(),
      removed: false,
      controlJoined: false,
      adoption: null,
    };
    this.#vms.set(spec.name, vm);
    return vm;
  }

  #byDomain(domain: number): Vm | undefined {
    for (const v of this.#vms.values()) if (v.id === domain) return v;
    return undefined;
  }

  #status(v: Vm): VmStatus {
    return {
      name: v.spec.name,
      id: v.id,
      qmp: v.spec.qmp,
      source: v.source,
      state: v.state,
      machine: v.machine,
      devices: [...v.devices],
      error: v.error?.message ?? null,
      errorCode: v.error?.code ?? null,
    };
  }

  #begin(vm: Vm): void {
    clearTimeout(vm.retry);
    vm.retry = undefined;
    vm.attempted = this.#attempt(vm);
  }

  #scheduleRetry(vm: Vm): void {
    if (vm.removed || this.#closed) return;
    clearTimeout(vm.retry);
    vm.retry = setTimeout(() => {
      vm.retry = undefined;
      if (!vm.removed && !this.#closed) vm.attempted = this.#attempt(vm);
    }, this.#retryMs);
    vm.retry.unref();
  }

  async #attempt(vm: Vm): Promise<void> {
    vm.state = 'connecting';
    let client: QmpClient;
    try {
      client = await QmpClient.connect(vm.spec.qmp, {
        commandTimeoutMs: this.#commandTimeoutMs,
        connectTimeoutMs: Math.min(this.#commandTimeoutMs, 5000),
      });
    } catch (err) {
      vm.state = 'waiting';
      const e = asKvmchanError(err);
      if (vm.error?.message !== e.message)
        this.#log?.info({ vm: vm.spec.name, qmp: vm.spec.qmp, err: e.message }, 'no QEMU on the QMP socket yet; retrying');
      vm.error = e;
      this.#scheduleRetry(vm);
      return;
    }
    if (vm.removed || this.#closed) {
      client.close();
      return;
    }
    vm.client = client;
    client.on('close', (why) => {
      this.#lost(vm, client, `QMP connection ended: ${why.message}`);
    });
    client.on('event', (e) => {
      if (e.event === 'SHUTDOWN') this.#lost(vm, client, 'the guest shut down (QMP SHUTDOWN)');
    });
    const log = this.#log?.child({ vm: vm.spec.name, domain: vm.id });
    log?.info({ qmp: vm.spec.qmp, qemu: client.version }, 'QMP connected');
    try {
      const status = await client.execute('query-status');
      if (typeof status !== 'object' || status === null || typeof (status as { status?: unknown }).status !== 'string') {
        throw new VmmError('query-status: malformed reply', 'KVMCHAN_E_QMP_PROTOCOL');
      }
      const leftovers = await ownedLeftovers(client);
      const prefix = domainFdPrefix('qmp', vm.spec.name);
      const stored = this.#fdStore?.take(prefix) ?? new Map<string, number>();
      if (leftovers.length > 0) {
        const plugged = leftovers.filter((l) => l.startsWith('device ')).map((l) => l.slice('device '.length));
        const adoptable = adoptionFor(this.#fdStore, prefix, stored, plugged);
        if (adoptable === null) {
          throw new VmmError(
            `VM ${vm.spec.name} still carries kvmchan devices of an earlier kvmchand (${leftovers.join(', ')}) and the service manager ` +
              `gave back no fds for them; they are never unplugged from a running VM, so it cannot be served again until its QEMU ` +
              `process restarts (docs/vms-qmp.md, "Restarts")`,
            'KVMCHAN_E_VMM_STALE',
          );
        }
        await this.#adopt(vm, client, plugged, adoptable, log);
        return;
      }
      if (stored.size > 0) {
        // A QEMU without our devices: the one the fds were for is gone.
        closeFds(stored);
        this.#fdStore?.removeUnder(prefix);
        log?.info({ fds: stored.size }, 'stored fds of an earlier QEMU dropped');
      }
      vm.machine = await machineKind(client);
      let controlBus: string | undefined;
      if (vm.machine === 'q35') {
        const ports = await rootPorts(client);
        const free = ports.filter((p) => !p.occupied);
        const need = reserveNeeded(this.#poolSize);
        const poolPort = free.find((p) => p.pref64Reserve >= need);
        if (poolPort === undefined) throw noPortError(vm.spec.name, `its first pool (${this.#poolSize >> 20} MiB)`, need, ports);
        // The control device's 256 KiB BAR fits any port: use the one least fit for a pool.
        const rest = free.filter((p) => p !== poolPort).sort((a, b) => a.pref64Reserve - b.pref64Reserve);
        if (rest.length === 0) throw noPortError(vm.spec.name, 'the control device (besides one for the first pool)', 0, ports);
        controlBus = rest[0]!.bus;
      }
      if (vm.client !== client) return;
      vm.control = this.#controlDevice(vm);
      await this.#plugOn(vm, client, CONTROL_DEVICE_ID, vm.control.socketPath, 1, controlBus);
      if (vm.client !== client) return;
      vm.state = 'serving';
      vm.error = null;
      log?.info({ machine: vm.machine, devices: vm.devices }, 'VM served');
      this.emit('domain-added', { id: vm.id, name: vm.spec.name });
      if (vm.controlJoined && vm.client === client) this.emit('control-join', vm.id);
    } catch (err) {
      if (vm.client !== client) return; // lost meanwhile; #lost handled it
      const e = asKvmchanError(err);
      vm.state = 'refused';
      vm.error = e;
      vm.control?.server.close();
      vm.control = null;
      vm.adoption = null;
      this.#fdStore?.removeUnder(domainFdPrefix('qmp', vm.spec.name));
      removeDomainDirIfEmpty(this.runtimeDir, vm.id);
      log?.error({ err: e.message, code: e.code }, 'cannot serve VM');
      // Keep the monitor: when this QEMU exits, a new one on the same socket is tried afresh.
    }
  }

  /**
   * Serve a VM that still carries the devices of an earlier daemon whose fds we got back: the
   * control device is rebuilt on the same memory and eventfds (QEMU is attached already), the
   * host pools are handed to the daemon (takeAdoption), nothing is plugged.
   */
  async #adopt(
    vm: Vm,
    client: QmpClient,
    plugged: string[],
    adoptable: { control: StoredDevice; adoption: Adoption },
    log: Logger | undefined,
  ): Promise<void> {
    let machine: MachineKind;
    try {
      machine = await machineKind(client);
    } catch (err) {
      closeStoredDevice(adoptable.control);
      for (const p of adoptable.adoption.pools) closeStoredDevice(p.device);
      throw err;
    }
    if (vm.client !== client) {
      closeStoredDevice(adoptable.control);
      for (const p of adoptable.adoption.pools) closeStoredDevice(p.device);
      return;
    }
    vm.machine = machine;
    vm.control = this.#controlDevice(vm, adoptable.control);
    vm.devices = plugged;
    vm.adoption = adoptable.adoption;
    vm.state = 'serving';
    vm.error = null;
    log?.info({ machine, devices: plugged, pools: adoptable.adoption.pools.map((p) => p.pool) }, 'VM adopted from stored fds');
    this.emit('domain-added', { id: vm.id, name: vm.spec.name });
    if (vm.controlJoined && vm.client === client) this.emit('control-join', vm.id);
  }

  /** `vm`'s control device: a fresh one, or rebuilt on a previous daemon's stored fds. */
  #controlDevice(vm: Vm, adopt?: StoredDevice): ControlDevice {
    return watchedControlDevice({ runtimeDir: this.runtimeDir, log: this.#log, adopt, vmm: this, guest: vm });
  }

  /** Plug a device for an announcement (q35: on a free port with enough prefetchable reserve). */
  async #plug(
    vm: Vm,
    client: QmpClient,
    id: string,
    socketPath: string,
    vectors: number,
    what: string,
    needReserve: number,
  ): Promise<void> {
    let bus: string | undefined;
    if (vm.machine === 'q35') {
      const ports = await rootPorts(client);
      const port = ports.find((p) => !p.occupied && p.pref64Reserve >= needReserve);
      if (port === undefined) throw noPortError(vm.spec.name, what, needReserve, ports);
      bus = port.bus;
    }
    await this.#plugOn(vm, client, id, socketPath, vectors, bus);
  }

  async #plugOn(vm: Vm, client: QmpClient, id: string, socketPath: string, vectors: number, bus: string | undefined): Promise<void> {
    const t0 = performance.now();
    await client.execute('chardev-add', {
      id,
      backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: socketPath } }, server: false } },
    });
    try {
      await client.execute('device_add', {
        driver: 'ivshmem-doorbell',
        id,
        chardev: id,
        vectors,
        ioeventfd: true,
        ...(bus !== undefined ? { bus } : {}),
      });
    } catch (err) {
      // A device that never realized let go of its chardev: removing that one is safe.
      await client.execute('chardev-remove', { id }).catch(() => undefined);
      throw err;
    }
    vm.devices.push(id);
    const realized = await client.execute('qom-get', { path: `/machine/peripheral/${id}`, property: 'realized' });
    if (realized !== true) throw new VmmError(`device ${id} did not realize`, 'KVMCHAN_E_VMM_PLUG');
    this.#log?.info(
      { vm: vm.spec.name, domain: vm.id, device: id, bus: bus ?? '(root bus)', ms: Number((performance.now() - t0).toFixed(1)) },
      'device hot-plugged',
    );
  }

  /** The VM is gone (or its monitor): domain removed, wait for a QEMU on the socket again. */
  #lost(vm: Vm, client: QmpClient, why: string): void {
    if (vm.client !== client) return;
    this.#disconnect(vm, why);
    vm.error = new VmmError(why, 'KVMCHAN_E_VMM_GONE');
    this.#scheduleRetry(vm);
  }

  #disconnect(vm: Vm, why: string): void {
    // An adopted QEMU has no connection to the device that could end first: it leaves here, so
    // the guest link closes before its device does.
    if (vm.controlJoined) vm.control?.server.disconnect(GUEST_CONTROL_PEER, why);
    const client = vm.client;
    vm.client = null;
    client?.close();
    const wasServing = vm.state === 'serving';
    vm.state = 'waiting';
    vm.machine = null;
    vm.devices = [];
    const control = vm.control;
    vm.control = null;
    vm.controlJoined = false;
    control?.server.close();
    for (const p of vm.adoption?.pools ?? []) closeStoredDevice(p.device);
    vm.adoption = null;
    if (wasServing) {
      this.#log?.info({ vm: vm.spec.name, domain: vm.id, why }, 'VM gone');
      this.emit('domain-removed', { id: vm.id, name: vm.spec.name });
    }
    removeDomainDirIfEmpty(this.runtimeDir, vm.id);
  }
}
