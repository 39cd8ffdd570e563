/** The host's VchanService: the registry itself, for callers in domain 0. */
import type { Caller, Registry, VchanGrant } from './registry.js';
import { HOST_DOMAIN } from './registry.js';
import { RegistryError } from './registry-error.js';
import type { FdGrant, VchanService, DomainStatus, PoolStatus } from '../vchan-service.js';

export function toFdGrant(g: VchanGrant): FdGrant {
  if (g.access.kind !== 'fds') throw new RegistryError('EIO', 'host endpoint without fds');
  const { shm, wait, kick } = g.access;
  return {
    handle: g.handle,
    role: g.role,
    readOrder: g.readOrder,
    writeOrder: g.writeOrder,
    localDomain: g.localDomain,
    peerDomain: g.peerDomain,
    port: g.port,
    shmOffset: g.shmOffset,
    shmLength: g.shmLength,
    fds: { shm, wait, kick },
    // The registry keeps these fds for the vchan's lifetime; the kernel duplicates them on send.
    release: () => undefined,
  };
}

export class HostVchanService implements VchanService {
  readonly localDomain = HOST_DOMAIN;
  readonly #registry: Registry;
  readonly #pools: () => PoolStatus[];

  readonly #controlUp: (domain: number) => boolean;

  /** `controlUp(g)`: guest g's daemon has said GUEST_HELLO on its control channel. */
  constructor(registry: Registry, pools: () => PoolStatus[] = () => [], controlUp: (domain: number) => boolean = () => false) {
    this.#registry = registry;
    this.#pools = pools;
    this.#controlUp = controlUp;
  }

  listPools(): Promise<PoolStatus[]> {
    return Promise.resolve(this.#pools());
  }

  async serverInit(caller: Caller, peerDomain: number, port: number, readMin: number, writeMin: number): Promise<FdGrant> {
    return toFdGrant(await this.#registry.serverInit(caller, peerDomain, port, readMin, writeMin));
  }

  async clientInit(caller: Caller, serverDomain: number, port: number, timeoutMs: number): Promise<FdGrant> {
    return toFdGrant(await this.#registry.clientInit(caller, serverDomain, port, timeoutMs));
  }

  // eslint-disable-next-line @typescript-eslint/require-await
  async close(caller: Caller, handle: number): Promise<void> {
    this.#registry.close(caller, handle);
  }

  dropConnection(connId: number): void {
    this.#registry.dropConnection(connId);
  }

  listDomains(): Promise<DomainStatus[]> {
    return Promise.resolve(this.#registry.listDomains().map((d) => ({ ...d, vchans: this.#registry.vchansOfDomain(d.id), controlUp: d.id === 0 || this.#controlUp(d.id) })));
  }

  listVchans(caller: Caller): Promise<ReturnType<Registry['listVchans']>> {
    return Promise.resolve(this.#registry.listVchans(caller));
  }
}
