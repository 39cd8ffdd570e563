/**
 * The libvirt VMM backend (docs/vms-libvirt.md): domains come from libvirtd, over its remote
 * protocol on the UNIX socket (client.ts). This backend:
 *
 * 1. connects, opens the URI (qemu:///system by default), registers for LIFECYCLE and
 *    DEVICE_REMOVED events of every domain, and lists the running domains;
 * 2. for each followed running domain (configuration `domains`: "all" or names): gives it a
 *    stable kvmchan domain id by UUID (domain-ids.ts), reads its live XML, refuses it if it
 *    still carries kvmchan `<shmem>` devices of an earlier daemon, adopts it when the service
 *    manager's fd store gave us back that daemon's fds for them (device-fds.ts: the same memory
 *    and eventfds, nothing is attached) and otherwise refuses it (the same stale-device policy
 *    as the QMP backend: devices are never unplugged, the domain is served again after it
 *    restarts); else creates its control device (control-device.ts) and attaches it live as an
 *    ivshmem-doorbell `<shmem>` with an explicit address on a free `pcie-root-port` (q35) —
 *    libvirt's own placement finds no hot-pluggable slot on q35 — then emits `domain-added`;
 * 3. attaches every pool the pool manager creates for a domain the same way (`plugPool`), on a
 *    free root port whose `pref64-reserve` is at least twice the pool size;
 * 4. on a STOPPED or CRASHED event emits `domain-removed`; on STARTED serves the domain anew;
 * 5. when libvirtd goes away, keeps serving the domains (their QEMUs run on and stay attached to
 *    our devices), reconnects with backoff and re-syncs: domains gone meanwhile are removed,
 *    new ones served, and a served domain whose live XML lost our control device (it restarted
 *    while we were not looking) is removed and served again; a refused domain is judged again;
 * 6. for each `bootDomains` name, listens from its own start — libvirt reachable or not — on
 *    `<runtimeDir>/libvirt/<name>/control.sock`, where that domain's persistent XML declares its
 *    control device: QEMU connects at boot, and a domain that starts with it is served without
 *    an attach. When it stops, a fresh device listens there again for its next boot.
 *
 * Sockets are reachable by the user QEMU runs as and nobody else: the domain's directory is
 * shared with the group of its DAC label (hot-plugged devices) or `qemuGroup` (boot devices),
 * see domain-dir.ts.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { KvmchanError, VmmError } from '../../../errors.js';
import type { IvshmemServer } from '../../../ivshmem/server.js';
import { registryName } from '../../../protocol/views.js';
import type { PoolAnnouncement } from '../../pools/pool-manager.js';
import type { GuestVmm, GuestVmmEvents, VmmDomain } from '../vmm.js';
import { createControlDevice, watchedControlDevice, type ControlDevice } from '../control-device.js';
import { native } from '../../../native.js';
import { CONTROL_SOCKET, SHARED_DIR_MODE, removeDomainDirIfEmpty, removeDomainsRootIfEmpty, shareDomainDir } from '../domain-dir.js';
import { reserveNeeded } from '../qmp/placement.js';
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
import { LibvirtClient } from './client.js';
import { EventId, LifecycleEvent, uuidString, type LifecycleMsg, type RemoteDomain } from './codec.js';
import { DomainIds } from './domain-ids.js';
import { domainLayout, shmemXml, type DomainLayout, type RootPort } from './domain-xml.js';
import { GUEST_CONTROL_PEER } from '../../guest-link/host-link.js';

export const DEFAULT_LIBVIRT_SOCKET = '/run/libvirt/libvirt-sock';
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';
export const CONTROL_SHMEM = CONTROL_DEVICE_NAME;
export const SHMEM_PREFIX = 'kvmchan-';
export const poolShmem = poolDeviceName;
/** Where kvmchand serves boot domains' control devices. */
export const BOOT_DIR = 'libvirt';
/** The `<server path>` a boot domain's persistent XML gives `kvmchan-ctl`. */
export function bootControlPath(runtimeDir: string, name: string): string {
  return path.join(path.resolve(runtimeDir), BOOT_DIR, name, CONTROL_SOCKET);
}
/** Every libvirt domain's stored fds are under this (device-fds.ts); then the domain's UUID. */
const FD_ROOT = 'kvmchan/libvirt/';
/** How long a starting boot domain's QEMU may take to show up on its control socket. */
const BOOT_JOIN_MS = 5000;

export interface LibvirtVmmOptions {
  runtimeDir: string;
  socketPath?: string;
  uri?: string;
  /** Which running domains to serve: all, or these names. */
  domains?: 'all' | readonly string[];
  /** Domains whose persistent XML declares `kvmchan-ctl` at bootControlPath(). */
  bootDomains?: readonly string[];
  /** Group (name or gid) QEMU runs as, for boot devices' sockets. Default: none (0700). */
  qemuGroup?: string | number;
  poolSize: number;
  /** Domain ids other backends use. */
  reservedIds?: ReadonlySet<number>;
  /** First reconnect delay; doubles up to maxRetryMs. Default 500 ms. */
  retryMs?: number;
  maxRetryMs?: number;
  callTimeoutMs?: number;
  /** The service manager's fd store: devices' fds to adopt running domains with (device-fds.ts). */
  fdStore?: FdStore;
  log?: Logger;
}

export type LibvirtDomainState = 'attaching' | 'serving' | 'refused';

export interface LibvirtDomainStatus {
  name: string;
  uuid: string;
  id: number;
  state: LibvirtDomainState;
  devices: string[];
  error: string | null;
  errorCode: string | null;
}

interface Dom {
  uuid: string;
  name: string;
  id: number;
  remote: RemoteDomain;
  state: LibvirtDomainState;
  control: ControlDevice | null;
  devices: string[];
  error: KvmchanError | null;
  chain: Promise<void>;
  removed: boolean;
  controlJoined: boolean;
  /** Served through its boot device (declared in its persistent XML). */
  boot: boolean;
  /** Set while an adopted domain waits for the daemon to take it (takeAdoption). */
  adoption: Adoption | null;
}

/** A boot domain's control device, listening while the domain is not served. */
interface Boot {
  name: string;
  control: ControlDevice;
  joined: boolean;
}

function asKvmchanError(err: unknown): KvmchanError {
  return err instanceof KvmchanError ? err : new KvmchanError((err as Error).message ?? String(err), 'KVMCHAN_E_VMM');
}

function noPort(name: string, what: string, need: number, ports: RootPort[]): VmmError {
  const free = ports.filter((p) => !p.occupied);
  return new VmmError(
    `domain ${name} has no free pcie-root-port for ${what}` +
      (need > 0 ? ` with pref64-reserve >= ${need} bytes` : '') +
      ` (${ports.length} root ports, ${free.length} free: ${free.map((p) => `index ${p.index} reserve ${p.pref64Reserve}`).join(', ') || 'none'}); ` +
      `add root ports to the domain XML (docs/vms-libvirt.md, "Domain XML")`,
    'KVMCHAN_E_VMM_NO_PORT',
  );
}

export class LibvirtVmm extends EventEmitter<GuestVmmEvents> implements GuestVmm {
  readonly kind = 'libvirt';
  readonly runtimeDir: string;
  readonly socketPath: string;
  readonly uri: string;
  readonly #filter: 'all' | ReadonlySet<string>;
  readonly #ids: DomainIds;
  readonly #log: Logger | undefined;
  readonly #poolSize: number;
  readonly #reserved: ReadonlySet<number>;
  readonly #retryMs: number;
  readonly #maxRetryMs: number;
  readonly #callTimeoutMs: number;
  readonly #doms = new Map<string, Dom>();
  readonly #bootNames: ReadonlySet<string>;
  readonly #boot = new Map<string, Boot>();
  readonly #qemuGroup: string | number | undefined;
  readonly #fdStore: FdStore | undefined;
  /** Stored fds of domains not running were dropped (done after the first listing). */
  #storeSorted = false;
  #client: LibvirtClient | null = null;
  #retry: NodeJS.Timeout | undefined;
  #delay: number;
  #closed = false;
  /** Connections made (1 after the first; more after libvirtd restarts). */
  connects = 0;

  constructor(opts: LibvirtVmmOptions) {
    super();
    this.runtimeDir = path.resolve(opts.runtimeDir);
    this.socketPath = opts.socketPath ?? DEFAULT_LIBVIRT_SOCKET;
    this.uri = opts.uri ?? DEFAULT_LIBVIRT_URI;
    this.#filter = opts.domains === undefined || opts.domains === 'all' ? 'all' : new Set(opts.domains);
    this.#log = opts.log?.child({ component: 'vmm', backend: 'libvirt' });
    this.#ids = new DomainIds(this.runtimeDir, this.#log);
    this.#poolSize = opts.poolSize;
    this.#reserved = opts.reservedIds ?? new Set();
    this.#retryMs = opts.retryMs ?? 500;
    this.#maxRetryMs = opts.maxRetryMs ?? 10_000;
    this.#delay = this.#retryMs;
    this.#callTimeoutMs = opts.callTimeoutMs ?? 10_000;
    this.#bootNames = new Set(opts.bootDomains ?? []);
    this.#qemuGroup = opts.qemuGroup;
    this.#fdStore = opts.fdStore;
  }

  /** Start following libvirtd (after the daemon listens to our events). */
  start(): void {
    for (const name of this.#bootNames) this.#arm(name);
    void this.#connect();
  }

  /** Listen on `name`'s boot control socket (unless already). */
  #arm(name: string): void {
    if (this.#closed || this.#boot.has(name)) return;
    try {
      const root = path.join(this.runtimeDir, BOOT_DIR);
      fs.mkdirSync(root, { recursive: true, mode: 0o711 });
      fs.chmodSync(root, 0o711);
      const dir = path.join(root, name);
      try {
        fs.mkdirSync(dir, { mode: 0o700 });
      } catch (err) {
        // An earlier daemon's directory is taken over if it is ours (checked below).
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const st = fs.lstatSync(dir);
      if (!st.isDirectory() || st.uid !== (process.geteuid?.() ?? st.uid))
        throw new VmmError(`${dir} is not a directory of ours`, 'KVMCHAN_E_RUNTIME_DIR');
      const gid = this.#bootGid();
      if (gid !== null) fs.chownSync(dir, -1, gid);
      fs.chmodSync(dir, gid !== null ? SHARED_DIR_MODE : 0o700);
      const b: Boot = {
        name,
        joined: false,
        control: createControlDevice({
          runtimeDir: this.runtimeDir,
          domain: 0,
          dir,
          log: this.#log?.child({ bootDomain: name }),
          onJoin: () => {
            b.joined = true;
            const d = this.#servedBy(b.control);
            d.controlJoined = true;
            if (d.state === 'serving') this.emit('control-join', d.id);
          },
          onLeave: (reason) => {
            b.joined = false;
            const d = this.#servedBy(b.control);
            const was = d.controlJoined;
            d.controlJoined = false;
            if (was && d.state === 'serving') this.emit('control-leave', d.id, reason);
          },
        }),
      };
      this.#boot.set(name, b);
      this.#log?.info({ bootDomain: name, socket: b.control.socketPath, qemuGid: gid }, 'boot control device listening');
    } catch (err) {
      const e = asKvmchanError(err);
      this.#log?.error({ bootDomain: name, err: e.message, code: e.code }, 'cannot listen for a boot domain');
    }
  }

  /** The served domain using boot device `c`, or a detached record (events before #serve). */
  #servedBy(c: ControlDevice): Pick<Dom, 'controlJoined' | 'state' | 'id'> {
    for (const d of this.#doms.values()) if (d.control === c) return d;
    return { controlJoined: false, state: 'attaching', id: 0 };
  }

  #bootGid(): number | null {
    const g = this.#qemuGroup;
    if (g === undefined) return null;
    if (typeof g === 'number') return g;
    const gid = native.groupId(g);
    if (gid === null) throw new VmmError(`libvirt.qemuGroup: no group named ${g}`, 'KVMCHAN_E_VMM_CONFIG');
    return gid;
  }

  get connected(): boolean {
    return this.#client !== null && !this.#client.closed;
  }

  domains(): VmmDomain[] {
    return [...this.#doms.values()]
      .filter((d) => d.state === 'serving')
      .map((d) => ({ id: d.id, name: registryName(d.name) }))
      .sort((a, b) => a.id - b.id);
  }

  has(domain: number): boolean {
    return this.#byId(domain)?.state === 'serving';
  }

  controlDevice(domain: number): IvshmemServer {
    const d = this.#byId(domain);
    if (d?.control == null) throw new VmmError(`no libvirt domain ${domain} is served`, 'KVMCHAN_E_VMM_UNKNOWN');
    return d.control.server;
  }

  /** Where `domain`'s device fds go in the fd store, while it is served. */
  fdPrefix(domain: number): string | undefined {
    const d = this.#byId(domain);
    return d?.state === 'serving' ? domainFdPrefix('libvirt', d.uuid) : undefined;
  }

  /**
   * Every libvirt domain's stored fds are kept at start: which domains run is known only once
   * libvirtd answered (then those of domains not running are dropped, #sortStore).
   */
  fdPrefixes(): string[] {
    return [FD_ROOT];
  }

  /** An adopted domain's device key and pools, once (the daemon asks when the domain is added). */
  takeAdoption(domain: number): Adoption | undefined {
    const d = this.#byId(domain);
    const a = d?.adoption ?? undefined;
    if (d !== undefined) d.adoption = null;
    return a;
  }

  list(): LibvirtDomainStatus[] {
    return [...this.#doms.values()]
      .sort((a, b) => a.id - b.id)
      .map((d) => ({
        name: d.name,
        uuid: d.uuid,
        id: d.id,
        state: d.state,
        devices: [...d.devices],
        error: d.error?.message ?? null,
        errorCode: d.error?.code ?? null,
      }));
  }

  plugPool(domain: number, a: PoolAnnouncement): void {
    const d = this.#byId(domain);
    if (d === undefined || d.state !== 'serving') return;
    this.#enqueue(d, async () => {
      if (d.state !== 'serving') return;
      await this.#attach(d, poolShmem(a.pool), a.socketPath, a.vectors, reserveNeeded(a.size), `pool ${a.pool} (${a.size >> 20} MiB)`);
    }).catch((err: unknown) => {
      const e = asKvmchanError(err);
      d.error = e;
      this.#log?.error({ domain, domainName: d.name, pool: a.pool, err: e.message, code: e.code }, 'cannot attach a pool');
    });
  }

  /** Stop following libvirtd. Domains keep running with their devices; no domain-removed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retry);
    const c = this.#client;
    this.#client = null;
    void c?.close(500);
    for (const d of this.#doms.values()) {
      d.removed = true;
      for (const p of d.adoption?.pools ?? []) closeStoredDevice(p.device);
      d.adoption = null;
      d.control?.server.close();
      if (d.control !== null) removeDomainDirIfEmpty(this.runtimeDir, d.id);
      d.control = null;
    }
    this.#doms.clear();
    for (const b of this.#boot.values()) {
      b.control.server.close();
      fs.rmSync(path.dirname(b.control.socketPath), { recursive: true, force: true });
    }
    this.#boot.clear();
    try {
      fs.rmdirSync(path.join(this.runtimeDir, BOOT_DIR));
    } catch {
      // not empty or never made
    }
    removeDomainsRootIfEmpty(this.runtimeDir);
  }

  // --- connection ------------------------------------------------------------------------------

  async #connect(): Promise<void> {
    if (this.#closed) return;
    let client: LibvirtClient;
    try {
      client = await LibvirtClient.connect(this.socketPath, { callTimeoutMs: this.#callTimeoutMs });
    } catch (err) {
      this.#scheduleReconnect((err as Error).message);
      return;
    }
    if (this.#closed) {
      client.destroy();
      return;
    }
    client.on('close', (why) => {
      if (this.#client !== client) return;
      this.#client = null;
      this.#log?.warn({ err: why.message }, 'libvirt connection lost; domains stay served, reconnecting');
      this.#scheduleReconnect(why.message);
    });
    client.on('lifecycle', (m) => {
      this.#onLifecycle(client, m);
    });
    client.on('device-removed', (m) => {
      const d = this.#doms.get(uuidString(m.dom.uuid));
      if (d !== undefined && m.alias.includes(SHMEM_PREFIX))
        this.#log?.warn({ domain: d.id, alias: m.alias }, 'a kvmchan device was removed from the domain by someone else');
    });
    try {
      await client.authenticate();
      await client.open(this.uri);
      await client.registerEvent(EventId.LIFECYCLE);
      await client.registerEvent(EventId.DEVICE_REMOVED);
      this.#client = client;
      this.connects++;
      this.#delay = this.#retryMs;
      this.#log?.info({ socket: this.socketPath, uri: this.uri, connects: this.connects }, 'libvirt connected');
      await this.#resync(client);
    } catch (err) {
      this.#log?.error({ err: (err as Error).message }, 'libvirt connection setup failed');
      if (this.#client === client) this.#client = null;
      client.destroy();
      this.#scheduleReconnect((err as Error).message);
    }
  }

  #scheduleReconnect(why: string): void {
    if (this.#closed || this.#retry !== undefined) return;
    const delay = this.#delay;
    this.#delay = Math.min(this.#delay * 2, this.#maxRetryMs);
    this.#log?.debug({ why, delay }, 'libvirt: reconnecting later');
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      void this.#connect();
    }, delay);
    this.#retry.unref();
  }

  async #resync(client: LibvirtClient): Promise<void> {
    const running = await client.listActiveDomains();
    const seen = new Set<string>();
    for (const r of running) {
      const uuid = uuidString(r.uuid);
      seen.add(uuid);
      const d = this.#doms.get(uuid);
      if (d === undefined) {
        this.#serve(client, r);
        continue;
      }
      d.remote = r;
      if (d.state === 'refused') {
        // Judged again: it may have restarted (stale devices gone) or been given ports meanwhile.
        this.#remove(d, 'checked again after reconnecting');
        this.#serve(client, r);
        continue;
      }
      if (d.state !== 'serving') continue;
      // Still ours? A domain restarted while libvirtd (or our link to it) was down lost our devices.
      this.#enqueue(d, async () => {
        const layout = domainLayout(await client.domainXml(r), SHMEM_PREFIX);
        if (!layout.ownShmem.includes(CONTROL_SHMEM) && !d.removed) {
          this.#remove(d, 'the domain restarted while libvirt was unreachable');
          this.#serve(client, r);
        }
      }).catch((err: unknown) => {
        this.#log?.warn({ domain: d.id, err: (err as Error).message }, 'cannot re-check a domain after reconnecting');
      });
    }
    for (const d of [...this.#doms.values()]) if (!seen.has(d.uuid)) this.#remove(d, 'the domain is no longer running');
    this.#sortStore(running);
  }

  /**
   * Once, after the first listing: stored fds of a domain that does not run (or is not followed)
   * cannot be adopted by anyone — its QEMU, which held the devices, is gone.
   */
  #sortStore(running: readonly RemoteDomain[]): void {
    if (this.#storeSorted || this.#fdStore === undefined) return;
    this.#storeSorted = true;
    const live = new Set(running.filter((r) => this.#follows(r.name)).map((r) => domainFdPrefix('libvirt', uuidString(r.uuid))));
    this.#fdStore.discardUnclaimed('no running libvirt domain has this UUID', (name) => {
      if (!name.startsWith(FD_ROOT)) return true;
      for (const p of live) if (name.startsWith(p)) return true;
      return false;
    });
  }

  #onLifecycle(client: LibvirtClient, m: LifecycleMsg): void {
    const uuid = uuidString(m.dom.uuid);
    if (m.event === LifecycleEvent.STARTED) {
      const old = this.#doms.get(uuid);
      if (old !== undefined) this.#remove(old, 'the domain started again');
      this.#serve(client, m.dom);
    } else if (m.event === LifecycleEvent.STOPPED || m.event === LifecycleEvent.CRASHED) {
      const d = this.#doms.get(uuid);
      if (d !== undefined)
        this.#remove(
          d,
          m.event === LifecycleEvent.STOPPED ? `the domain stopped (detail ${m.detail})` : `the domain crashed (detail ${m.detail})`,
        );
    }
  }

  // --- domains ---------------------------------------------------------------------------------

  #follows(name: string): boolean {
    return this.#filter === 'all' || this.#filter.has(name);
  }

  #byId(id: number): Dom | undefined {
    for (const d of this.#doms.values()) if (d.id === id) return d;
    return undefined;
  }

  #enqueue(d: Dom, fn: () => Promise<void>): Promise<void> {
    const p = d.chain.then(fn);
    d.chain = p.catch(() => undefined);
    return p;
  }

  #serve(client: LibvirtClient, r: RemoteDomain): void {
    if (this.#closed || !this.#follows(r.name)) return;
    const uuid = uuidString(r.uuid);
    if (this.#doms.has(uuid)) return;
    const reserved = new Set([...this.#reserved, ...[...this.#doms.values()].map((d) => d.id)]);
    let id: number;
    try {
      id = this.#ids.assign(uuid, reserved);
    } catch (err) {
      this.#log?.error({ domainName: r.name, err: (err as Error).message }, 'cannot give the domain an id');
      return;
    }
    const d: Dom = {
      uuid,
      name: r.name,
      id,
      remote: r,
      state: 'attaching',
      control: null,
      devices: [],
      error: null,
      chain: Promise.resolve(),
      removed: false,
      controlJoined: false,
      boot: false,
      adoption: null,
    };
    this.#doms.set(uuid, d);
    const log = this.#log?.child({ domainName: d.name, domain: d.id });
    const prefix = domainFdPrefix('libvirt', uuid);
    this.#enqueue(d, async () => {
      const t0 = performance.now();
      const layout = domainLayout(await client.domainXml(r), SHMEM_PREFIX);
      if (d.removed) return;
      // Claimed now, whatever happens next: adopted below, or closed as an earlier QEMU's.
      const stored = this.#fdStore?.take(prefix) ?? new Map<string, number>();
      const boot = this.#boot.get(d.name);
      if (
        boot !== undefined &&
        layout.ownShmem.length === 1 &&
        layout.shmemServers.get(CONTROL_SHMEM) === boot.control.socketPath &&
        (await this.#bootJoined(boot))
      ) {
        // Declared in its persistent XML, and this QEMU connected to our listening device at boot.
        this.#dropStored(prefix, stored, log);
        if (d.removed) return;
        this.#boot.delete(d.name);
        this.#share(d, layout.qemuIds, log);
        d.control = boot.control;
        d.controlJoined = boot.joined;
        d.boot = true;
        d.devices.push(CONTROL_SHMEM);
        d.state = 'serving';
        log?.info(
          { machine: layout.machine, ms: Number((performance.now() - t0).toFixed(1)) },
          'libvirt domain served through its boot device',
        );
        this.emit('domain-added', { id: d.id, name: registryName(d.name) });
        if (d.controlJoined) this.emit('control-join', d.id);
        return;
      }
      if (layout.ownShmem.length > 0) {
        const own = layout.ownShmem;
        const adoptable = adoptionFor(this.#fdStore, prefix, stored, own);
        if (adoptable === null) {
          throw new VmmError(
            `domain ${d.name} still carries kvmchan devices of an earlier kvmchand (${own.join(', ')}) and the service manager gave ` +
              `back no fds for them; they are never unplugged from a running domain, so it is served again only after it restarts ` +
              `(docs/vms-libvirt.md, "Restarts")`,
            'KVMCHAN_E_VMM_STALE',
          );
        }
        this.#adopt(d, own, layout.qemuIds, adoptable, log);
        return;
      }
      this.#dropStored(prefix, stored, log);
      this.#share(d, layout.qemuIds, log);
      let controlBus: number | undefined;
      if (layout.machine === 'q35') {
        const free = layout.ports.filter((p) => !p.occupied);
        const need = reserveNeeded(this.#poolSize);
        const poolPort = free.find((p) => p.pref64Reserve >= need);
        if (poolPort === undefined) throw noPort(d.name, `its first pool (${this.#poolSize >> 20} MiB)`, need, layout.ports);
        const rest = free.filter((p) => p !== poolPort).sort((a, b) => a.pref64Reserve - b.pref64Reserve);
        if (rest.length === 0) throw noPort(d.name, 'the control device (besides one for the first pool)', 0, layout.ports);
        controlBus = rest[0]!.index;
      }
      d.control = this.#controlDevice(d);
      await this.#attachOn(d, CONTROL_SHMEM, d.control.socketPath, 1, controlBus);
      if (d.removed) return;
      d.state = 'serving';
      d.error = null;
      log?.info({ machine: layout.machine, devices: d.devices, ms: Number((performance.now() - t0).toFixed(1)) }, 'libvirt domain served');
      this.emit('domain-added', { id: d.id, name: registryName(d.name) });
      if (d.controlJoined) this.emit('control-join', d.id);
    }).catch((err: unknown) => {
      if (d.removed) return;
      const e = asKvmchanError(err);
      d.state = 'refused';
      d.error = e;
      d.control?.server.close();
      d.control = null;
      for (const p of d.adoption?.pools ?? []) closeStoredDevice(p.device);
      d.adoption = null;
      this.#fdStore?.removeUnder(prefix);
      removeDomainDirIfEmpty(this.runtimeDir, d.id);
      if (this.#bootNames.has(d.name)) this.#arm(d.name);
      log?.error({ err: e.message, code: e.code }, 'cannot serve libvirt domain');
    });
  }

  /**
   * Serve a domain that still carries the devices of an earlier daemon whose fds we got back:
   * the control device is rebuilt on the same memory and eventfds (QEMU holds them already), the
   * host pools go to the daemon (takeAdoption), nothing is attached (docs/vms-libvirt.md,
   * "Restarts"). The guest daemon notices the new session by itself (the session word).
   */
  #adopt(
    d: Dom,
    own: string[],
    ids: { uid: number; gid: number } | null,
    adoptable: { control: StoredDevice; adoption: Adoption },
    log: Logger | undefined,
  ): void {
    try {
      this.#share(d, ids, log);
    } catch (err) {
      closeStoredDevice(adoptable.control);
      for (const p of adoptable.adoption.pools) closeStoredDevice(p.device);
      throw err;
    }
    d.adoption = adoptable.adoption;
    // Taken over by the device (closed by it on error).
    d.control = this.#controlDevice(d, adoptable.control);
    d.devices = [...own];
    d.boot = own.length === 1 && this.#bootNames.has(d.name);
    d.state = 'serving';
    d.error = null;
    log?.info({ devices: own, pools: adoptable.adoption.pools.map((p) => p.pool) }, 'libvirt domain adopted from stored fds');
    this.emit('domain-added', { id: d.id, name: registryName(d.name) });
    if (d.controlJoined) this.emit('control-join', d.id);
  }

  /** `d`'s control device: a fresh one, or rebuilt on a previous daemon's stored fds. */
  #controlDevice(d: Dom, adopt?: StoredDevice): ControlDevice {
    return watchedControlDevice({ runtimeDir: this.runtimeDir, log: this.#log, adopt, vmm: this, guest: d });
  }

  /** Stored fds of a domain that no longer carries our devices: its earlier QEMU is gone. */
  #dropStored(prefix: string, stored: Map<string, number>, log: Logger | undefined): void {
    if (stored.size === 0) return;
    closeFds(stored);
    this.#fdStore?.removeUnder(prefix);
    log?.info({ fds: stored.size }, 'stored fds of an earlier QEMU dropped');
  }

  /** QEMU running as another user (libvirt's default) must be able to reach the domain's sockets. */
  #share(d: Dom, ids: { uid: number; gid: number } | null, log: Logger | undefined): void {
    const euid = process.geteuid?.() ?? 0;
    const gid = ids !== null && ids.uid !== euid && ids.gid !== 0 ? ids.gid : null;
    shareDomainDir(this.runtimeDir, d.id, gid);
    if (gid !== null) log?.info({ qemuUid: ids!.uid, qemuGid: gid }, "domain directory shared with QEMU's group");
  }

  /** Whether the boot device has its QEMU (waiting a little: its join may still be in flight). */
  async #bootJoined(b: Boot): Promise<boolean> {
    const deadline = Date.now() + BOOT_JOIN_MS;
    while (!b.joined && !this.#closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return b.joined;
  }

  async #attach(d: Dom, name: string, socketPath: string, vectors: number, needReserve: number, what: string): Promise<void> {
    const client = this.#client;
    if (client === null) throw new VmmError('libvirt is not connected', 'KVMCHAN_E_VMM_GONE');
    const layout: DomainLayout = domainLayout(await client.domainXml(d.remote), SHMEM_PREFIX);
    let bus: number | undefined;
    if (layout.machine === 'q35') {
      const port = layout.ports.find((p) => !p.occupied && p.pref64Reserve >= needReserve);
      if (port === undefined) throw noPort(d.name, what, needReserve, layout.ports);
      bus = port.index;
    }
    await this.#attachOn(d, name, socketPath, vectors, bus);
  }

  async #attachOn(d: Dom, name: string, socketPath: string, vectors: number, bus: number | undefined): Promise<void> {
    const client = this.#client;
    if (client === null) throw new VmmError('libvirt is not connected', 'KVMCHAN_E_VMM_GONE');
    const t0 = performance.now();
    await client.attachDeviceLive(d.remote, shmemXml(name, socketPath, vectors, bus));
    d.devices.push(name);
    this.#log?.info(
      {
        domainName: d.name,
        domain: d.id,
        device: name,
        bus: bus ?? '(libvirt placement)',
        ms: Number((performance.now() - t0).toFixed(1)),
      },
      'device attached',
    );
  }

  #remove(d: Dom, why: string): void {
    if (d.removed) return;
    d.removed = true;
    this.#doms.delete(d.uuid);
    const wasServing = d.state === 'serving';
    // An adopted QEMU has no connection to the device that could end first: it leaves here, so
    // the guest link closes before its device does.
    if (d.controlJoined) d.control?.server.disconnect(GUEST_CONTROL_PEER, why);
    d.control?.server.close();
    d.control = null;
    d.controlJoined = false;
    for (const p of d.adoption?.pools ?? []) closeStoredDevice(p.device);
    d.adoption = null;
    if (wasServing) {
      this.#log?.info({ domainName: d.name, domain: d.id, why }, 'libvirt domain gone');
      this.emit('domain-removed', { id: d.id, name: registryName(d.name) });
    }
    removeDomainDirIfEmpty(this.runtimeDir, d.id);
    // A boot domain listens again for its next start (also when it was refused, e.g. stale).
    if (this.#bootNames.has(d.name)) this.#arm(d.name);
  }
}
