/**
 * Shared-memory regions inside a guest (docs/shmem.md §6): the guest daemon serves its local
 * clients' SHM_* like the host daemon does, by asking the host with GUEST_SHM_* for the client's
 * connection (`conn`), and turns the pool coordinates it gets back into mmap parameters on its
 * own pool device: the device's shared-memory fd, and the region's offset in it (for a VFIO
 * device, BAR2's region offset plus the extent's offset, docs/ivshmem.md §8).
 *
 * Every hold stays the host's to count: a client's SHM_UNMAP goes up as GUEST_SHM_UNMAP and the
 * end of its connection as GUEST_CONN_CLOSED (sent by the vchan service for every local
 * connection), so an extent is never reused while a client here still counts as mapping it.
 */
import type { Logger } from 'pino';
import { Command } from '../../protocol/constants.js';
import type { GuestShmRegionInfo } from '../../protocol/types.js';
import type { Caller } from '../registry/registry.js';
import { RegistryError } from '../registry/registry-error.js';
import type { RegionGrant, RegionService } from '../regions/region-registry.js';
import type { GuestVchanService } from './guest-service.js';

export class GuestRegionService implements RegionService {
  readonly #link: GuestVchanService;
  readonly #log: Logger;

  constructor(link: GuestVchanService, log: Logger) {
    this.#link = link;
    this.#log = log;
  }

  async share(caller: Caller, domain: number, pages: number): Promise<RegionGrant> {
    const r = await this.#link.request(Command.GUEST_SHM_SHARE, { conn: caller.connId, domain, pages });
    return this.#toGrant(caller, r.body);
  }

  async map(caller: Caller, ownerDomain: number, id: number): Promise<RegionGrant> {
    const r = await this.#link.request(Command.GUEST_SHM_MAP, { conn: caller.connId, domain: ownerDomain, id });
    return this.#toGrant(caller, r.body);
  }

  async unmap(caller: Caller, ownerDomain: number, id: number): Promise<void> {
    await this.#link.request(Command.GUEST_SHM_UNMAP, { conn: caller.connId, domain: ownerDomain, id });
  }

  async release(caller: Caller, id: number): Promise<void> {
    await this.#link.request(Command.GUEST_SHM_RELEASE, { conn: caller.connId, id });
  }

  /**
   * LIST_REGIONS is answered by the host daemon only (docs/wire-protocol.md §6.11): the guest
   * link has no command to list them, so `kvmchan status` in a guest shows none.
   */
  listFor(): never {
    throw new RegistryError('EOPNOTSUPP', 'shared-memory regions are listed by the host daemon');
  }

  /** The vchan service reports the connection's end to the host (GUEST_CONN_CLOSED): nothing here. */
  dropConnection(): void {
    /* holds live on the host */
  }

  async #toGrant(caller: Caller, info: GuestShmRegionInfo): Promise<RegionGrant> {
    try {
      const dev = await this.#link.poolDevice(info.pool);
      // The host is trusted, but a wrong answer must not make us hand out memory outside the pool.
      if (info.shmOffset % 4096 !== 0 || info.shmOffset + info.shmLength > dev.shm.size) {
        throw new RegistryError('EIO', `host sent region ${info.id} outside pool ${info.pool}`);
      }
      // The device keeps its fd while the pool is attached; SCM_RIGHTS gives the client its own.
      return {
        id: info.id,
        ownerDomain: info.ownerDomain,
        targetDomain: info.targetDomain,
        pages: info.pages,
        shmOffset: (dev.shm.offset ?? 0) + info.shmOffset,
        shmLength: info.shmLength,
        fd: dev.shm.fd,
      };
    } catch (err) {
      // The client gets nothing: give the hold back so the host can free the extent.
      this.#link.request(Command.GUEST_SHM_UNMAP, { conn: caller.connId, domain: info.ownerDomain, id: info.id }).catch((e: unknown) => {
        this.#log.warn({ region: info.id, err: (e as Error).message }, 'could not give back a region hold');
      });
      throw err;
    }
  }
}
