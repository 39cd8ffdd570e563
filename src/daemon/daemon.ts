/**
 * kvmchand on the host: composes the components (DESIGN.md §2) — runtime dir,
 * registry, pool manager, local client socket, VMM backend and one control link
 * per guest — and runs them in this process.
 */
import type { Logger } from 'pino';
import { Registry } from './registry/registry.js';
import { Policy } from './registry/policy.js';
import { RuntimeDir } from './runtime-dir.js';
import { LocalServer } from './local/local-server.js';
import { HostVchanService } from './registry/host-service.js';
import { PoolManager } from './pools/pool-manager.js';
import { SimulatedVmm, simulatedGuests } from './vmm/simulated.js';
import type { VmmDomain } from './vmm/vmm.js';
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
  #vmm: SimulatedVmm | null = null;
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
      },
      deviceKey: (domain) => this.#deviceKeys.get(domain),
    });
    this.registry = new Registry(log.child({ component: 'registry' }), this.pools, config.limits, new Policy(config.policy));
  }

  start(): void {
    this.runtime.acquire();
    try {
      this.#local = new LocalServer({
        socketPath: this.runtime.socketPath,
        service: new HostVchanService(this.registry, () => this.pools.pools()),
        limits: this.config.limits,
        socketGroup: this.config.socketGroup,
        log: this.log.child({ component: 'local' }),
      });
      if (this.config.simulateGuests > 0) this.#startSimulated(this.config.simulateGuests);
    } catch (err) {
      this.#local?.close();
      this.#vmm?.close();
      this.pools.close();
      this.runtime.release();
      throw err;
    }
    this.log.info(
      { runtimeDir: this.runtime.dir, socket: this.runtime.socketPath, mode: 'host', guests: this.#vmm?.domains().map((d) => d.id) ?? [] },
      'kvmchand ready',
    );
  }

  #startSimulated(n: number): void {
    const vmm = new SimulatedVmm({ runtimeDir: this.runtime.dir, guests: simulatedGuests(n), log: this.log });
    this.#vmm = vmm;
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
    this.pools.on('member-left', (domain, pool) => {
      this.log.info({ domain, pool }, 'guest left a pool');
      this.registry.poolMemberLeft(domain, pool);
    });
  }

  #addDomain(d: VmmDomain): void {
    this.registry.addDomain({ id: d.id, name: d.name });
    // The key goes into the control device header before the guest can attach, and into the
    // tags of every pool the guest is a member of.
    const key = newDeviceKey();
    this.#deviceKeys.set(d.id, key);
    if (this.#vmm !== null) writeDeviceHeader(this.#vmm.controlDevice(d.id).host!, encodeControlHeader(CONTROL_DEVICE_SIZE, 1, key));
    this.pools.addDomain(d.id);
    this.log.info({ domain: d.id, name: d.name }, 'domain added');
  }

  #removeDomain(id: number): void {
    this.#closeLink(id, 'domain removed');
    this.#deviceKeys.delete(id);
    this.registry.removeDomain(id);
    this.pools.removeDomain(id);
    this.log.info({ domain: id }, 'domain removed');
  }

  #openLink(domain: number): void {
    const vmm = this.#vmm;
    if (vmm === null) return;
    this.#closeLink(domain, 'guest attached again');
    const device = vmm.controlDevice(domain);
    const name = vmm.domains().find((d) => d.id === domain)?.name ?? `domain-${domain}`;
    try {
      const link = new HostLink(
        {
          domain,
          name,
          device: device.host!,
          registry: this.registry,
          log: this.log.child({ component: 'guest-link' }),
          pools: () => this.pools.poolsOf(domain),
          poolStatus: () => this.pools.pools(),
          onViolation: (why) => {
            // A guest that breaks the control protocol is cut off; its daemon may attach again.
            this.#links.delete(domain);
            device.disconnect(GUEST_CONTROL_PEER, why);
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
    this.#vmm?.close();
    this.pools.close();
    this.runtime.release();
    this.log.info('kvmchand stopped');
  }
}
