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

  constructor(config: Config, log: Logger) {
    this.config = config;
    this.log = log;
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
          log: this.log,
        });
        this.#libvirt = lv;
        this.#follow(lv);
        lv.start();
      }
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
    // The key goes into the control device header before the guest can attach, and into the
    // tags of every pool the guest is a member of.
    const key = newDeviceKey();
    this.#deviceKeys.set(d.id, key);
    const control = this.#backendOf(d.id)?.controlDevice(d.id).host;
    if (control !== undefined && control !== null) writeDeviceHeader(control, encodeControlHeader(CONTROL_DEVICE_SIZE, 1, key));
    this.pools.addDomain(d.id);
    this.log.info({ domain: d.id, domainName: d.name }, 'domain added');
  }

  #removeDomain(id: number): void {
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
    this.runtime.release();
    this.log.info('kvmchand stopped');
  }
}
