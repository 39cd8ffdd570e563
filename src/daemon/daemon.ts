/**
 * kvmchand on the host: composes the components (docs/architecture.md) — runtime dir,
 * registry, pool manager, local client socket, VMM backend and one control link
 * per guest — and runs them in this process.
 */
import type { Logger } from 'pino';
import { Registry } from './registry/registry.js';
import { Policy } from './registry/policy.js';
import { RuntimeDir } from './runtime-dir.js';
import { LocalServer } from './local/local-server.js';
import { groupId } from './local/credentials.js';
import { HostVchanService } from './registry/host-service.js';
import { PoolManager } from './pools/pool-manager.js';
import { RegionRegistry } from './regions/region-registry.js';
import { SimulatedVmm, simulatedGuests } from './vmm/simulated.js';
import { QmpVmm } from './vmm/qmp/qmp-vmm.js';
import { LibvirtVmm } from './vmm/libvirt/libvirt-vmm.js';
import type { GuestVmm, VmmDomain } from './vmm/vmm.js';
import { HostLink, GUEST_CONTROL_PEER, CONTROL_DEVICE_SIZE } from './guest-link/host-link.js';
import { encodeControlHeader, newDeviceKey, writeDeviceHeader } from '../ivshmem/device-header.js';
import type { Config } from './config.js';
import { defaultRuntimeDir } from '../paths.js';
import { FdStore } from './fd-store.js';
import { CONTROL_FD_DEVICE, poolFdDevice, storeDeviceFds } from './vmm/device-fds.js';
import { HOST_PEER_ID } from '../ivshmem/server.js';

/** Registry connection ids of guest-side connections start here (local ones count from 1). */
const GUEST_CONN_BASE = 1_000_000_000;

export class Daemon {
  readonly log: Logger;
  readonly config: Config;
  readonly runtime: RuntimeDir;
  readonly registry: Registry;
  readonly pools: PoolManager;
  readonly regions: RegionRegistry;
  /** The one request path for the local socket and every guest link. */
  readonly #service: HostVchanService;
  #simulated: SimulatedVmm | null = null;
  #qmp: QmpVmm | null = null;
  #libvirt: LibvirtVmm | null = null;
  readonly #backends: GuestVmm[] = [];
  readonly #links = new Map<number, HostLink>();
  /** Each guest's device key (docs/ivshmem.md §9), for the life of the domain. */
  readonly #deviceKeys = new Map<number, Buffer>();
  #local: LocalServer | null = null;
  #nextGuestConn = GUEST_CONN_BASE;
  #stopped = false;
  /** The service manager's fd store (fd-store.ts): VM devices outlive a restart of ours there. */
  readonly fdStore: FdStore;
  /** Each stored domain's fd-store prefix, for removing its fds when it goes. */
  readonly #fdPrefixes = new Map<number, string>();

  constructor(config: Config, log: Logger, opts: { fdStore?: FdStore } = {}) {
    this.config = config;
    this.log = log;
    this.fdStore = opts.fdStore ?? new FdStore({ log });
    this.runtime = new RuntimeDir(config.runtimeDir ?? defaultRuntimeDir());
    this.pools = new PoolManager({
      runtimeDir: this.runtime.dir,
      config: config.pools,
      log,
      announce: (domain, a) => {
        this.#links.get(domain)?.announcePool(a);
        this.#backendOf(domain)?.plugPool?.(domain, a);
      },
      deviceKey: (domain) => this.#deviceKeys.get(domain),
    });
    const policy = new Policy(config.policy, { groupId });
    for (const group of policy.unknownGroups) log.warn({ group }, 'policy.hostRules names a group that does not exist: it matches nobody');
    this.registry = new Registry(log.child({ component: 'registry' }), this.pools, config.limits, policy);
    // A host process hears of its peer's death over its own connection (wire-protocol.md §7.3).
    this.registry.onPeerClosed = (connId, handle) => {
      this.#local?.notifyPeerClosed(connId, handle);
    };
    this.regions = new RegionRegistry({
      log: log.child({ component: 'regions' }),
      limits: config.limits,
      quota: this.registry,
      domainExists: (d) => this.registry.hasDomain(d),
      placement: this.pools,
      refusesDomains: (a, b) => policy.refuses(a, b),
    });
    this.#service = new HostVchanService(
      this.registry,
      () => this.pools.pools(),
      (domain) => this.#controlUp(domain),
    );
  }

  start(): void {
    this.runtime.acquire();
    try {
      this.#local = new LocalServer({
        socketPath: this.runtime.socketPath,
        service: this.#service,
        regions: this.regions,
        limits: this.config.limits,
        socketGroup: this.config.socketGroup,
        adminGroup: this.config.adminGroup,
        log: this.log.child({ component: 'local' }),
      });
      // Pool ids still plugged in running VMs (stored by an earlier daemon) are never reused.
      for (const name of this.fdStore.unclaimed) {
        const m = /\/pool([0-9]{1,10})u[0-9]+\//.exec(name);
        if (m !== null) this.pools.reservePoolIds(Number(m[1]));
      }
      this.pools.on('member-joined', (domain, pool) => {
        this.#storePool(domain, pool);
      });
      this.pools.on('member-left', (domain, pool) => {
        this.log.info({ domain, pool }, 'guest left a pool');
        this.registry.poolMemberLeft(domain, pool);
      });
      if (this.config.simulateGuests > 0) {
        const vmm = new SimulatedVmm({ runtimeDir: this.runtime.dir, guests: simulatedGuests(this.config.simulateGuests), log: this.log });
        this.#simulated = vmm;
        this.#follow(vmm);
      }
      const qmp = new QmpVmm({
        runtimeDir: this.runtime.dir,
        vms: this.config.vms,
        poolSize: this.pools.config.poolSize,
        reservedIds: new Set(this.#simulated?.domains().map((d) => d.id) ?? []),
        retryMs: this.config.qmp.retryMs,
        commandTimeoutMs: this.config.qmp.commandTimeoutMs,
        fdStore: this.fdStore,
        log: this.log,
      });
      this.#qmp = qmp;
      this.#follow(qmp);
      qmp.start();
      if (this.config.libvirt !== undefined) {
        const lv = new LibvirtVmm({
          runtimeDir: this.runtime.dir,
          socketPath: this.config.libvirt.socket,
          uri: this.config.libvirt.uri,
          domains: this.config.libvirt.domains,
          bootDomains: this.config.libvirt.bootDomains,
          ...(this.config.libvirt.qemuGroup !== undefined ? { qemuGroup: this.config.libvirt.qemuGroup } : {}),
          poolSize: this.pools.config.poolSize,
          reservedIds: new Set([...(this.#simulated?.domains().map((d) => d.id) ?? []), ...qmp.list().map((v) => v.id)]),
          retryMs: this.config.libvirt.retryMs,
          callTimeoutMs: this.config.libvirt.callTimeoutMs,
          fdStore: this.fdStore,
          log: this.log,
        });
        this.#libvirt = lv;
        this.#follow(lv);
        lv.start();
      }
      // Stored fds no backend follows any more (a VM taken out of the configuration): dropped.
      const kept = this.#backends.flatMap((b) => b.fdPrefixes?.() ?? []);
      this.fdStore.discardUnclaimed('no VM followed by this name', (name) => kept.some((p) => name.startsWith(p)));
    } catch (err) {
      this.#local?.close();
      for (const b of this.#backends) b.close();
      this.pools.close();
      this.runtime.release();
      throw err;
    }
    this.log.info(
      {
        runtimeDir: this.runtime.dir,
        socket: this.runtime.socketPath,
        mode: 'host',
        guests: this.#backends.flatMap((b) => b.domains().map((d) => d.id)),
        vms: this.#qmp?.list().map((v) => v.name) ?? [],
      },
      'kvmchand ready',
    );
  }

  /** The libvirt backend, when configured. */
  get libvirt(): LibvirtVmm | null {
    return this.#libvirt;
  }

  /** The QMP backend (kvmchan vm add/remove/list). */
  get qmp(): QmpVmm | null {
    return this.#qmp;
  }

  #follow(vmm: GuestVmm): void {
    this.#backends.push(vmm);
    for (const d of vmm.domains()) this.#addDomain(d);
    vmm.on('domain-added', (d) => {
      this.#addDomain(d);
    });
    vmm.on('domain-removed', (d) => {
      this.#removeDomain(d.id);
    });
    vmm.on('control-join', (domain) => {
      this.#storeControl(vmm, domain);
      this.#openLink(domain);
    });
    vmm.on('control-leave', (domain, reason) => {
      this.#closeLink(domain, `guest left its control device: ${reason}`);
    });
  }

  #controlUp(domain: number): boolean {
    return this.#links.get(domain)?.helloDone === true;
  }

  #backendOf(domain: number): GuestVmm | undefined {
    return this.#backends.find((b) => b.has(domain));
  }

  #addDomain(d: VmmDomain): void {
    this.registry.addDomain({ id: d.id, name: d.name });
    const backend = this.#backendOf(d.id);
    const prefix = backend?.fdPrefix?.(d.id);
    if (prefix !== undefined) this.#fdPrefixes.set(d.id, prefix);
    // Adopted (docs/vms-qmp.md, "Restarts"): the guest found its pools
    // with the key it read from the control device, which keeps it.
    const adoption = backend?.takeAdoption?.(d.id);
    for (const pool of adoption?.plugged ?? []) this.pools.reservePoolIds(pool);
    // The key goes into the control device header before the guest can attach, and into the
    // tags of every pool the guest is a member of.
    const key = adoption?.deviceKey ?? newDeviceKey();
    this.#deviceKeys.set(d.id, key);
    const control = backend?.controlDevice(d.id).host;
    if (control !== undefined && control !== null) writeDeviceHeader(control, encodeControlHeader(CONTROL_DEVICE_SIZE, 1, key));
    this.pools.addDomain(d.id, adoption?.pools);
    this.log.info({ domain: d.id, domainName: d.name, adopted: adoption !== undefined }, 'domain added');
  }

  /** The control device of a VM whose devices outlive us: its fds to the fd store. */
  #storeControl(vmm: GuestVmm, domain: number): void {
    const prefix = vmm.fdPrefix?.(domain);
    if (prefix === undefined) return;
    try {
      storeDeviceFds(this.fdStore, prefix, CONTROL_FD_DEVICE, vmm.controlDevice(domain), [HOST_PEER_ID, GUEST_CONTROL_PEER]);
    } catch (err) {
      this.log.warn({ domain, err: (err as Error).message }, 'cannot store the control device fds');
    }
  }

  /** A host pool of such a VM, once its QEMU attached (then every fd exists). */
  #storePool(domain: number, poolId: number): void {
    const prefix = this.#fdPrefixes.get(domain);
    const p = this.pools.servingPool(poolId);
    // Pair pools are not adopted (docs/vms.md): their fds are not kept.
    if (prefix === undefined || p === undefined || p.hostUid === undefined || p.members.length !== 1) return;
    try {
      storeDeviceFds(this.fdStore, prefix, poolFdDevice(poolId, p.hostUid), p.device, [HOST_PEER_ID, p.members[0]!.peerId]);
    } catch (err) {
      this.log.warn({ domain, pool: poolId, err: (err as Error).message }, 'cannot store the pool fds');
    }
  }

  #removeDomain(id: number): void {
    const prefix = this.#fdPrefixes.get(id);
    this.#fdPrefixes.delete(id);
    // While stopping, domains are not gone: their VMs keep the devices we stored.
    if (prefix !== undefined && !this.#stopped) this.fdStore.removeUnder(prefix);
    this.#closeLink(id, 'domain removed');
    this.#deviceKeys.delete(id);
    this.registry.removeDomain(id);
    this.pools.removeDomain(id);
    this.log.info({ domain: id }, 'domain removed');
  }

  #openLink(domain: number): void {
    const vmm = this.#backendOf(domain);
    if (vmm === undefined) return;
    this.#closeLink(domain, 'guest attached again');
    const device = vmm.controlDevice(domain);
    const name = vmm.domains().find((d) => d.id === domain)?.name ?? `domain-${domain}`;
    try {
      const link = new HostLink(
        {
          domain,
          name,
          device: device.host!,
          service: this.#service,
          regions: this.regions,
          log: this.log.child({ component: 'guest-link' }),
          maxConnections: this.config.limits.maxConnectionsPerGuest,
          slowPeerTimeoutMs: this.config.limits.slowPeerTimeoutMs,
          pools: () => this.pools.poolsOf(domain),
          onViolation: (why) => {
            // A guest that breaks the control protocol is cut off; its daemon may attach again.
            this.#links.delete(domain);
            device.disconnect(GUEST_CONTROL_PEER, why);
          },
          onGuestClosed: () => {
            // Still on the device (a guest daemon restarted inside a VM): offer a fresh session.
            if (this.#links.get(domain) !== link) return;
            this.#links.delete(domain);
            if (this.#stopped || device.host?.doorbellFd(GUEST_CONTROL_PEER, 0) == null) return;
            this.#openLink(domain);
          },
        },
        () => this.#nextGuestConn++,
      );
      this.#links.set(domain, link);
    } catch (err) {
      this.log.error({ domain, err }, 'cannot open the guest control channel');
    }
  }

  #closeLink(domain: number, why: string): void {
    const link = this.#links.get(domain);
    if (link === undefined) return;
    this.#links.delete(domain);
    link.close(why);
  }

  /** Clean shutdown: tell clients, mark every vchan closed, release all resources. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#local?.close();
    for (const id of [...this.#links.keys()]) this.#closeLink(id, 'daemon stopping');
    this.registry.shutdown();
    this.regions.shutdown();
    for (const b of this.#backends) b.close();
    this.pools.close();
    // What we stored stays stored: the VMs keep running with those devices (docs/operations.md).
    this.fdStore.close();
    this.runtime.release();
    this.log.info('kvmchand stopped');
  }
}
