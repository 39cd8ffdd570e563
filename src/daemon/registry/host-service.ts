/**
 * The host's VchanService: the registry itself, for local callers and for guests over their
 * guest links alike. What a caller may see follows from its scope (registry.ts, CallerScope).
 */
import type { Caller, Registry, VchanGrant, VchanSnapshot } from './registry.js';
import { HOST_DOMAIN } from './registry.js';
import type { Grant, VchanService, DomainStatus, PoolStatus } from '../vchan-service.js';

export function toGrant(g: VchanGrant): Grant {
  // The registry keeps a host vchan's fds until both endpoints have their copies (the kernel
  // duplicates them on send): handing the grants over lets it drop them. A guest's grant holds
  // no fds at all.
  const { handedOver, ...rest } = g;
  return { ...rest, release: handedOver };
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

  async serverInit(caller: Caller, peerDomain: number, port: number, readMin: number, writeMin: number): Promise<Grant> {
    return toGrant(await this.#registry.serverInit(caller, peerDomain, port, readMin, writeMin));
  }

  async clientInit(caller: Caller, serverDomain: number, port: number, timeoutMs: number): Promise<Grant> {
    return toGrant(await this.#registry.clientInit(caller, serverDomain, port, timeoutMs));
  }

  // eslint-disable-next-line @typescript-eslint/require-await
  async close(caller: Caller, handle: number): Promise<void> {
    this.#registry.close(caller, handle);
  }

  dropConnection(connId: number): void {
    this.#registry.dropConnection(connId);
  }

  listDomains(): Promise<DomainStatus[]> {
    return Promise.resolve(
      this.#registry
        .listDomains()
        .map((d) => ({ ...d, vchans: this.#registry.vchansOfDomain(d.id), controlUp: d.id === 0 || this.#controlUp(d.id) })),
    );
  }

  listVchans(caller: Caller): Promise<VchanSnapshot[]> {
    return Promise.resolve(this.#registry.listVchans(caller));
  }

  listPools(caller: Caller): Promise<PoolStatus[]> {
    const all = this.#pools();
    return Promise.resolve(caller.scope === 'guest' ? all.filter((p) => p.members.includes(caller.domain)) : all);
  }
}
