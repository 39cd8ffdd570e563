/**
 * Shared-memory regions from TypeScript (docs/shmem.md, docs/api.md "Shared-memory regions"):
 * share N pages with one domain under one id, map a region by (owner domain, id), or get its
 * mmap parameters for native code that maps it itself.
 *
 * A `Shmem` is one daemon connection. Everything obtained through it — regions it created,
 * mappings, mmap parameters — is tied to that connection (docs/shmem.md §3): `close()` (or the
 * process's death) releases the regions it created and drops its holds.
 */
import { native } from '../native.js';
import { Command, MAX_SHM_PAGES, NO_UID, RegionFlag } from '../protocol/constants.js';
import type { RegionEntry, ShmRegionInfo } from '../protocol/types.js';
import { ClosedError, DaemonError, InvalidArgumentError } from '../errors.js';
import { DaemonConnection } from './daemon-connection.js';

export interface ShmemOptions {
  runtimeDir?: string;
}

/** A mapped region: its memory is `buffer` (MAP_SHARED; detached by unmap or close). */
export interface ShmRegion {
  readonly id: number;
  /** The creator's domain: with `id`, the region's name. */
  readonly ownerDomain: number;
  /** The domain the creator shared it with. */
  readonly targetDomain: number;
  readonly pages: number;
  readonly buffer: ArrayBuffer;
}

/**
 * What a native consumer needs to `mmap()` the region itself: map `length` bytes of `fd` at
 * `offset`, MAP_SHARED, read-write. The caller owns `fd` and closes it (after mmap it may close
 * it at once). The daemon counts these parameters as one mapping until `unmap({domain, id})`
 * or `close()`.
 */
export interface ShmMmapParams {
  readonly id: number;
  readonly ownerDomain: number;
  readonly fd: number;
  readonly offset: number;
  readonly length: number;
}

/** A region as `list()` reports it (docs/api.md, "Shared-memory regions"). */
export interface ShmRegionStatus {
  readonly id: number;
  readonly ownerDomain: number;
  readonly targetDomain: number;
  readonly pages: number;
  /** Released by its creator: nobody new can map it; it lives on while someone holds it. */
  readonly released: boolean;
  /** Mappings not yet given back, all connections summed. */
  readonly holds: number;
  /** The creating host process's uid; null when a guest created the region. */
  readonly creatorUid: number | null;
  /** Its pid; null when unknown or not shown (a guest, or a caller inside a guest). */
  readonly creatorPid: number | null;
}

/** Every LIST_REGIONS page (wire-protocol.md §6.11) on `conn`, as the wire gives them. */
export async function listRegionEntries(conn: DaemonConnection, signal?: AbortSignal): Promise<RegionEntry[]> {
  const out: RegionEntry[] = [];
  for (let start = 0; ;) {
    const r = await conn.request(Command.LIST_REGIONS, { start }, signal);
    out.push(...r.body.entries);
    if (r.body.next === 0) return out;
    start = r.body.next;
  }
}

function regionStatus(e: RegionEntry): ShmRegionStatus {
  return {
    id: e.id,
    ownerDomain: e.ownerDomain,
    targetDomain: e.targetDomain,
    pages: e.pages,
    released: (e.flags & RegionFlag.RELEASED) !== 0,
    holds: e.holds,
    creatorUid: e.creatorUid === NO_UID ? null : e.creatorUid,
    creatorPid: e.creatorPid === 0 ? null : e.creatorPid,
  };
}

function checkU32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new InvalidArgumentError(`${what} must be a u32, got ${v}`);
  return v;
}

/** The wire carries only an errno (wire-protocol.md §6.11): say what it means for this call. */
function explain(err: unknown, what: Readonly<Record<string, string>>): unknown {
  if (!(err instanceof DaemonError)) return err;
  const name = err.code.replace(/^KVMCHAN_E_DAEMON_/, '');
  const meaning = what[name];
  return meaning === undefined ? err : new DaemonError(`${meaning} (${err.message})`, name, err.errno ?? 0);
}

const QUOTA =
  'kvmchand refused: this user\'s quota is used up (limits.maxShmBytesPerUid or limits.maxShmRegionsPerUid; docs/security.md, "Quotas")';

export class Shmem {
  readonly #conn: DaemonConnection;
  /** Mappings made through this connection, unmapped at close (no mapping outlives its owner). */
  readonly #mapped = new Set<ShmRegion>();
  #closed = false;

  private constructor(conn: DaemonConnection) {
    this.#conn = conn;
    conn.onLost(() => {
      this.#closed = true;
    });
  }

  static async open(options: ShmemOptions = {}): Promise<Shmem> {
    return new Shmem(await DaemonConnection.open(options.runtimeDir));
  }

  /** Shares `pages` zero-filled pages with `domain` (0: the host); the region is mapped here too. */
  async share(domain: number, pages: number): Promise<ShmRegion> {
    checkU32(domain, 'domain');
    if (!Number.isInteger(pages) || pages < 1 || pages > MAX_SHM_PAGES) {
      throw new InvalidArgumentError(`pages must be an integer from 1 to ${MAX_SHM_PAGES}, got ${pages}`);
    }
    this.#checkOpen();
    let reply;
    try {
      reply = await this.#conn.request(Command.SHM_SHARE, { domain, pages });
    } catch (err) {
      throw explain(err, {
        ESRCH: `domain ${domain} is not known to kvmchand`,
        EOPNOTSUPP: `kvmchand cannot share regions with domain ${domain}`,
        EINVAL: `a guest shares regions with another domain, not with its own (${domain})`,
        EMSGSIZE: `${pages} pages do not fit one pool (pools.poolSize; docs/shmem.md §4)`,
        EPERM: `policy does not allow regions between this domain and ${domain} (policy.guestPairs)`,
        EDQUOT: QUOTA,
        ENOSPC: 'kvmchand refused: its limit of regions is reached (limits.maxShmRegions)',
      });
    }
    return this.#mapReply(reply.body, reply.fds);
  }

  /** Maps region `id` of owner domain `domain`. ENOENT: no such region, released, or not ours to map. */
  async map(domain: number, id: number): Promise<ShmRegion> {
    const reply = await this.#requestMap(domain, id);
    return this.#mapReply(reply.body, reply.fds);
  }

  /** The region's mmap parameters (see ShmMmapParams: the caller owns the fd). */
  async mmapParams(domain: number, id: number): Promise<ShmMmapParams> {
    const reply = await this.#requestMap(domain, id);
    const fd = reply.fds[0]!;
    if (this.#closed) {
      native.close(fd);
      throw new ClosedError('Shmem is closed');
    }
    const b = reply.body;
    return { id: b.id, ownerDomain: b.ownerDomain, fd, offset: b.shmOffset, length: b.shmLength };
  }

  /**
   * Gives one mapping back: a region from share()/map() is unmapped here (its buffer detached)
   * and reported; `{domain, id}` reports a mapping made from mmapParams(), which the caller
   * unmapped itself.
   */
  async unmap(region: ShmRegion | { domain: number; id: number }): Promise<void> {
    this.#checkOpen();
    let domain: number, id: number;
    if ('buffer' in region) {
      if (!this.#mapped.delete(region)) throw new InvalidArgumentError('region is not mapped through this Shmem');
      native.munmap(region.buffer);
      ({ ownerDomain: domain, id } = region);
    } else {
      domain = checkU32(region.domain, 'domain');
      id = checkU32(region.id, 'id');
    }
    await this.#conn.request(Command.SHM_UNMAP, { domain, id });
  }

  /**
   * Releases a region this Shmem created: nobody new can map it; existing mappings, ours
   * included, stay valid (docs/shmem.md §3).
   */
  async release(id: number): Promise<void> {
    checkU32(id, 'id');
    this.#checkOpen();
    try {
      await this.#conn.request(Command.SHM_RELEASE, { id });
    } catch (err) {
      throw explain(err, {
        ENOENT: `no region ${id} of this domain (already released?)`,
        EPERM: `region ${id} was created by another connection`,
      });
    }
  }

  /**
   * The regions not yet freed that this process may see (wire-protocol.md §6.11): root all of
   * them, anyone else those its uid created or may map and those this connection holds.
   */
  async list(): Promise<ShmRegionStatus[]> {
    this.#checkOpen();
    return (await listRegionEntries(this.#conn)).map(regionStatus);
  }

  /** Unmaps every region mapped here and closes the connection (releasing what it created). */
  close(): void {
    for (const r of this.#mapped) native.munmap(r.buffer);
    this.#mapped.clear();
    this.#closed = true;
    this.#conn.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw new ClosedError('Shmem is closed');
  }

  async #requestMap(domain: number, id: number): Promise<{ body: ShmRegionInfo; fds: readonly number[] }> {
    checkU32(domain, 'domain');
    checkU32(id, 'id');
    this.#checkOpen();
    try {
      return await this.#conn.request(Command.SHM_MAP, { domain, id });
    } catch (err) {
      throw explain(err, { ENOENT: `no region ${id} of domain ${domain} that this process may map` });
    }
  }

  #mapReply(info: ShmRegionInfo, fds: readonly number[]): ShmRegion {
    const fd = fds[0]!;
    try {
      this.#checkOpen();
      // Offset and length come from the daemon (trusted); the fd is not needed once mapped.
      const region: ShmRegion = {
        id: info.id,
        ownerDomain: info.ownerDomain,
        targetDomain: info.targetDomain,
        pages: info.pages,
        buffer: native.mmap(fd, info.shmLength, info.shmOffset, true),
      };
      this.#mapped.add(region);
      return region;
    } catch (err) {
      // The daemon counted this mapping: give it back (a closed connection already did).
      if (!this.#closed) this.#conn.request(Command.SHM_UNMAP, { domain: info.ownerDomain, id: info.id }).catch(() => undefined);
      throw err;
    } finally {
      native.close(fd);
    }
  }
}
