/**
 * The registry owns all daemon state (architecture.md rule 3): domains, vchans,
 * waiting clients, quotas. Other components talk to it through the request
 * methods below, which take and return plain data (plus fds), so the same code
 * can sit behind an IPC boundary. It never touches a socket.
 */
import { setLongTimeout, type LongTimer } from '../../timer.js';
import type { Logger } from 'pino';
import {
  type Role,
  orderForMin,
  regionLength,
  OFF_CLIENT_STATE,
  OFF_SERVER_STATE,
  OFF_C2S_PROD,
  OFF_S2C_PROD,
  OFF_C2S_WRAPS,
  OFF_S2C_WRAPS,
  STATE_CLOSED,
} from '../../ring/layout.js';
import type { VchanResourceFactory, VchanResources, EndpointAccess } from './vchan-resources.js';
import type { VchanInfoData } from '../../protocol/views.js';
import { RegistryError } from './registry-error.js';
import type { Limits } from '../config.js';
import { Policy } from './policy.js';
import { RateLimitedLog } from '../rate-limited-log.js';

export const HOST_DOMAIN = 0;

/**
 * Where a caller asks from, which decides what it may see:
 * - 'local': a process on this daemon's socket; `pid`/`uid`/`gid` from SO_PEERCRED.
 * - 'guest': a connection of a guest daemon, over its guest link; known by its domain only
 *   (`pid`/`uid`/`gid` 0: a guest's processes are the guest's business).
 */
export type CallerScope = 'local' | 'guest';

/** Who is asking: established from SO_PEERCRED or the guest's device, never from the message. */
export interface Caller {
  connId: number;
  domain: number;
  scope: CallerScope;
  pid: number;
  uid: number;
  gid: number;
  /** root or member of the admin group (local callers): may inspect everything */
  privileged: boolean;
  /** Supplementary groups from SO_PEERGROUPS (local callers), for the host rules of the policy. */
  groups?: readonly number[];
}

export interface DomainInfo {
  id: number;
  name: string;
}

/** What one endpoint is told about its vchan (the same facts as the wire's VchanInfo). */
export interface VchanGrant extends VchanInfoData {
  access: EndpointAccess;
  /**
   * The grant was sent (or abandoned): once both sides' were, the daemon drops the fds it kept
   * only to hand over (docs/pools.md §1). Idempotent.
   */
  handedOver: () => void;
}

/**
 * Tells the local connection `connId` that the other side of its vchan `handle` is gone
 * (wire-protocol.md §7.3). Called after that side's state was stored CLOSED.
 */
export type PeerClosedListener = (connId: number, handle: number) => void;

export interface VchanSnapshot {
  handle: number;
  serverDomain: number;
  clientDomain: number;
  port: number;
  serverState: number;
  clientState: number;
  c2sOrder: number;
  s2cOrder: number;
  serverPid: number;
  clientPid: number;
  bytesClientToServer: number;
  bytesServerToClient: number;
  serverUid: number;
  clientUid: number;
}

interface Party {
  caller: Caller;
  gone: boolean;
}

interface VchanRecord {
  handle: number;
  key: string;
  serverDomain: number;
  clientDomain: number;
  port: number;
  res: VchanResources;
  server: Party;
  client: Party | null;
  /** Which grants were sent (or abandoned): the daemon's fds go once both were (§1 of pools.md). */
  handed: { server: boolean; client: boolean };
  /**
   * The host uid whose pool carries a host↔guest vchan (docs/pools.md §1): the host server's
   * uid, or for a guest's server the uid the policy gives its port. undefined otherwise.
   */
  hostUid: number | undefined;
}

interface Waiter {
  caller: Caller;
  key: string;
  resolve: (g: VchanGrant) => void;
  reject: (e: Error) => void;
  timer: LongTimer | undefined;
}

/** Adds `v` to the set of `k` in a map of sets (the registry's indexes). */
function indexAdd<K, V>(index: Map<K, Set<V>>, k: K, v: V): void {
  let set = index.get(k);
  if (set === undefined) {
    set = new Set();
    index.set(k, set);
  }
  set.add(v);
}

/** Removes `v` from the set of `k`, and the set once it is empty. */
function indexDelete<K, V>(index: Map<K, Set<V>>, k: K, v: V): void {
  const set = index.get(k);
  if (set === undefined) return;
  set.delete(v);
  if (set.size === 0) index.delete(k);
}

const keyOf = (serverDomain: number, clientDomain: number, port: number): string => `${serverDomain}:${clientDomain}:${port}`;

/**
 * Whom quotas are charged to (docs/security.md, "Quotas"): a local uid, or a guest domain as a
 * whole. root (local uid 0) is not limited.
 */
const principalOf = (c: Caller): string | null => (c.scope === 'guest' ? `dom:${c.domain}` : c.uid === 0 ? null : `uid:${c.uid}`);

interface Usage {
  /** vchan sides held (a server and a client each count). */
  sides: number;
  /** waiting VCHAN_CLIENT_INITs */
  waiters: number;
  /** shared memory of the vchans it created (servers are charged, clients attach for free) */
  bytes: number;
}

export class Registry {
  readonly #log: Logger;
  /** Refusals any client or guest can cause, as often as it likes (docs/security.md, "Guests"). */
  readonly #refusalLog: RateLimitedLog;
  readonly #factory: VchanResourceFactory;
  readonly #limits: Limits;
  readonly #policy: Policy;
  readonly #domains = new Map<number, DomainInfo>();
  readonly #byKey = new Map<string, VchanRecord>();
  readonly #byHandle = new Map<number, VchanRecord>();
  /** Every waiting client, in arrival order; indexed below so no request scans them all. */
  readonly #waiters = new Set<Waiter>();
  readonly #waitersByKey = new Map<string, Set<Waiter>>();
  readonly #waitersByConn = new Map<number, Set<Waiter>>();
  /** Records a connection holds a side of, so per-connection work never scans every vchan. */
  readonly #byConn = new Map<number, Set<VchanRecord>>();
  readonly #usage = new Map<string, Usage>();
  #nextHandle = 1;
  /** Set by whoever owns the local connections (daemon.ts); nothing is told without one. */
  onPeerClosed: PeerClosedListener | undefined;

  constructor(log: Logger, factory: VchanResourceFactory, limits: Limits, policy: Policy = new Policy()) {
    this.#log = log;
    this.#refusalLog = new RateLimitedLog(log);
    this.#factory = factory;
    this.#limits = limits;
    this.#policy = policy;
    this.#domains.set(HOST_DOMAIN, { id: HOST_DOMAIN, name: 'dom0' });
  }

  get vchanCount(): number {
    return this.#byHandle.size;
  }

  addDomain(info: DomainInfo): void {
    this.#domains.set(info.id, info);
  }

  /** A domain went away: every vchan involving it loses that side; its waiters fail. */
  removeDomain(id: number): void {
    if (id === HOST_DOMAIN) return;
    this.#domains.delete(id);
    for (const rec of [...this.#byHandle.values()]) {
      if (rec.serverDomain === id) this.#leave(rec, 'server', 'domain gone');
      if (rec.clientDomain === id && rec.client !== null) this.#leave(rec, 'client', 'domain gone');
    }
    for (const w of [...this.#waiters]) {
      if (w.key.startsWith(`${id}:`)) this.#failWaiter(w, new RegistryError('ESRCH', `domain ${id} is gone`));
    }
  }

  /**
   * A guest lost its attachment to one pool (its doorbells there are gone):
   * every side it held in that pool is dead, as if its process had died.
   */
  poolMemberLeft(domain: number, poolId: number): void {
    for (const rec of [...this.#byHandle.values()]) {
      if (rec.res.poolId !== poolId) continue;
      if (rec.serverDomain === domain && !rec.server.gone) this.#leave(rec, 'server', `left pool ${poolId}`);
      if (rec.clientDomain === domain && rec.client !== null && !rec.client.gone) this.#leave(rec, 'client', `left pool ${poolId}`);
    }
  }

  #checkDomain(id: number): void {
    if (!this.#domains.has(id)) throw new RegistryError('ESRCH', `no such domain ${id}`);
  }

  #countFor(connId: number): number {
    let n = 0;
    for (const rec of this.#byConn.get(connId) ?? []) {
      if (rec.server.caller.connId === connId && !rec.server.gone) n++;
      if (rec.client?.caller.connId === connId && !rec.client.gone) n++;
    }
    return n;
  }

  #usageOf(c: Caller): Usage | null {
    const p = principalOf(c);
    if (p === null) return null;
    let u = this.#usage.get(p);
    if (u === undefined) {
      u = { sides: 0, waiters: 0, bytes: 0 };
      this.#usage.set(p, u);
    }
    return u;
  }

  #releaseUsage(c: Caller, d: Partial<Usage>): void {
    const p = principalOf(c);
    const u = p === null ? undefined : this.#usage.get(p);
    if (p === null || u === undefined) return;
    u.sides -= d.sides ?? 0;
    u.waiters -= d.waiters ?? 0;
    u.bytes -= d.bytes ?? 0;
    if (u.sides <= 0 && u.waiters <= 0 && u.bytes <= 0) this.#usage.delete(p);
  }

  /**
   * Shared-memory regions count in the same byte quota as the vchans a caller created
   * (docs/shmem.md §4). Throws EDQUOT, charging nothing, when `bytes` more would exceed it.
   */
  chargeShmBytes(c: Caller, bytes: number): void {
    const u = this.#usageOf(c);
    if (u === null) return;
    if (u.bytes + bytes > this.#limits.maxShmBytesPerUid) {
      this.#releaseUsage(c, {});
      throw new RegistryError(
        'EDQUOT',
        `shared-memory quota of ${c.scope === 'guest' ? `domain ${c.domain}` : `uid ${c.uid}`} reached (limits.maxShmBytesPerUid = ${this.#limits.maxShmBytesPerUid})`,
      );
    }
    u.bytes += bytes;
  }

  refundShmBytes(c: Caller, bytes: number): void {
    this.#releaseUsage(c, { bytes });
  }

  /** Is `id` a known domain (the host, or a guest the VMM reported)? */
  hasDomain(id: number): boolean {
    return this.#domains.has(id);
  }

  /** Refuses a new side beyond the caller's vchan quota (ENOSPC names the limit). */
  #checkSides(c: Caller): void {
    const u = this.#usageOf(c);
    if (u !== null && u.sides >= this.#limits.maxVchansPerUid) {
      throw new RegistryError(
        'EDQUOT',
        `vchan quota of ${c.scope === 'guest' ? `domain ${c.domain}` : `uid ${c.uid}`} reached (limits.maxVchansPerUid = ${this.#limits.maxVchansPerUid})`,
      );
    }
  }

  #hold(rec: VchanRecord, c: Caller): void {
    indexAdd(this.#byConn, c.connId, rec);
    const u = this.#usageOf(c);
    if (u !== null) u.sides++;
  }

  #unhold(rec: VchanRecord, c: Caller): void {
    const set = this.#byConn.get(c.connId);
    if (set !== undefined) {
      const other = rec.server.caller.connId === c.connId ? rec.client : rec.server;
      // The same connection may hold both sides (a loopback vchan): keep it until both left.
      if (other === null || other.caller.connId !== c.connId || other.gone) set.delete(rec);
      if (set.size === 0) this.#byConn.delete(c.connId);
    }
    this.#releaseUsage(c, { sides: 1 });
  }

  /** VCHAN_SERVER_INIT (wire-protocol.md): allocate a vchan and hand the server its side. */
  #checkPolicy(a: number, b: number, caller: Caller): void {
    const why = this.#policy.refuses(a, b);
    if (why !== null) {
      this.#refusalLog.warn({ domain: caller.domain, conn: caller.connId, from: a, to: b, why }, 'vchan refused by policy');
      throw new RegistryError('EPERM', why);
    }
  }

  /** A uid rule of the policy said no (`why`): one EPERM, logged, whatever the rule. */
  #refuse(caller: Caller, why: string | null, port: number): void {
    if (why === null) return;
    this.#log.warn({ conn: caller.connId, uid: caller.uid, port, why }, 'vchan refused by policy');
    throw new RegistryError('EPERM', why);
  }

  /**
   * The host uid whose pool a host↔guest vchan goes to (docs/security.md, "Pools"): host
   * processes of different uids never share a pool, since holding a pool's memfd lets a process
   * map all of it.
   */
  #hostUidOf(server: Caller, peerDomain: number, port: number): number | undefined {
    if (server.domain === HOST_DOMAIN && peerDomain !== HOST_DOMAIN) return server.uid;
    if (server.domain !== HOST_DOMAIN && peerDomain === HOST_DOMAIN) return this.#policy.guestServiceUid(port);
    return undefined;
  }

  /** Why a host process may not attach as client of `rec`, or null (guests: the domain rules). */
  #clientRefusal(rec: VchanRecord, caller: Caller): string | null {
    if (caller.scope !== 'local') return null;
    if (rec.serverDomain === HOST_DOMAIN) return this.#policy.refusesHostClient(rec.server.caller.uid, caller, rec.port);
    return this.#policy.refusesGuestServiceClient(rec.hostUid ?? 0, caller, rec.port);
  }

  /**
   * serverInit, waiting once for pool capacity (architecture.md rule 2: pools are
   * added ahead of demand, but a burst can outrun them).
   */
  async serverInit(caller: Caller, peerDomain: number, port: number, readMin: number, writeMin: number): Promise<VchanGrant> {
    try {
      return this.serverInitNow(caller, peerDomain, port, readMin, writeMin);
    } catch (err) {
      const f = this.#factory;
      if (!(err instanceof RegistryError) || err.errnoName !== 'EAGAIN' || f.whenCapacity === undefined) throw err;
      await f.whenCapacity(caller.domain, peerDomain, this.#limits.capacityWaitMs, this.#hostUidOf(caller, peerDomain, port));
      return this.serverInitNow(caller, peerDomain, port, readMin, writeMin);
    }
  }

  serverInitNow(caller: Caller, peerDomain: number, port: number, readMin: number, writeMin: number): VchanGrant {
    this.#checkDomain(peerDomain);
    this.#checkPolicy(caller.domain, peerDomain, caller);
    if (caller.scope === 'local') this.#refuse(caller, this.#policy.refusesServer(caller, port), port);
    if (readMin > 2 ** this.#limits.maxRingOrder || writeMin > 2 ** this.#limits.maxRingOrder) {
      // wire-protocol.md §6.3: a ring that cannot be that large is -EMSGSIZE.
      throw new RegistryError('EMSGSIZE', `ring size above the limit of ${2 ** this.#limits.maxRingOrder} bytes`);
    }
    const key = keyOf(caller.domain, peerDomain, port);
    const existing = this.#byKey.get(key);
    if (existing !== undefined && !this.#mayServeAgain(existing, caller)) {
      throw new RegistryError('EEXIST', `port ${port} toward domain ${peerDomain} is already served`);
    }
    if (this.#byHandle.size >= this.#limits.maxVchans) throw new RegistryError('ENOSPC', 'vchan limit reached');
    if (this.#countFor(caller.connId) >= this.#limits.maxVchansPerConnection) {
      throw new RegistryError('ENOSPC', 'per-connection vchan limit reached');
    }
    this.#checkSides(caller);
    // The server reads c2s and writes s2c (ring-protocol.md §3).
    const geometry = { c2sOrder: orderForMin(readMin), s2cOrder: orderForMin(writeMin) };
    const usage = this.#usageOf(caller);
    const bytes = regionLength(geometry);
    if (usage !== null && usage.bytes + bytes > this.#limits.maxShmBytesPerUid) {
      throw new RegistryError(
        'EDQUOT',
        `shared-memory quota of ${caller.scope === 'guest' ? `domain ${caller.domain}` : `uid ${caller.uid}`} reached (limits.maxShmBytesPerUid = ${this.#limits.maxShmBytesPerUid})`,
      );
    }
    const hostUid = this.#hostUidOf(caller, peerDomain, port);
    const res = this.#factory.create(geometry, caller.domain, peerDomain, hostUid);
    const rec: VchanRecord = {
      handle: this.#nextHandle++ >>> 0,
      key,
      serverDomain: caller.domain,
      clientDomain: peerDomain,
      port,
      res,
      server: { caller, gone: false },
      client: null,
      hostUid,
      handed: { server: false, client: false },
    };
    this.#byKey.set(key, rec);
    this.#byHandle.set(rec.handle, rec);
    this.#hold(rec, caller);
    if (usage !== null) usage.bytes += bytes;
    this.#log.debug({ handle: rec.handle, key, peerPid: caller.pid, ...geometry }, 'vchan server ready');
    this.#matchWaiters(key);
    return this.#grant(rec, 'server');
  }

  #grant(rec: VchanRecord, role: Role): VchanGrant {
    const g = rec.res.geometry;
    const server = role === 'server';
    return {
      handle: rec.handle,
      role,
      readOrder: server ? g.c2sOrder : g.s2cOrder,
      writeOrder: server ? g.s2cOrder : g.c2sOrder,
      localDomain: server ? rec.serverDomain : rec.clientDomain,
      peerDomain: server ? rec.clientDomain : rec.serverDomain,
      port: rec.port,
      shmOffset: rec.res.shmOffset,
      shmLength: rec.res.shmLength,
      access: server ? rec.res.server : rec.res.client,
      handedOver: () => {
        if (rec.handed[role]) return;
        rec.handed[role] = true;
        // Once both endpoints hold their copies nobody will ever need the daemon's. Both, not
        // just the client: a waiting client's grant can go out before its server's.
        if (rec.handed.server && rec.handed.client) rec.res.handedOver();
      },
    };
  }

  /**
   * Serving a port again while its vchan has a client (docs/api.md "Serving many clients"):
   * allowed to the port's owner only — the same uid on the host, the same domain for a guest
   * (whose callers the host cannot tell apart) — so nobody else can take a port over.
   * A vchan still waiting for its client is never displaced (EEXIST, as in Xen).
   */
  #mayServeAgain(existing: VchanRecord, caller: Caller): boolean {
    if (existing.client === null || existing.server.gone) return false;
    const owner = existing.server.caller;
    if (owner.scope !== caller.scope || owner.domain !== caller.domain) return false;
    return caller.scope === 'guest' || owner.uid === caller.uid;
  }

  /** A record a client may attach to: exists, server alive, never had a client. */
  #attachable(key: string): VchanRecord | 'busy' | undefined {
    const rec = this.#byKey.get(key);
    if (rec === undefined || rec.server.gone) return undefined;
    if (rec.client === null) return rec;
    // A client that already left: the server will re-init (qubesdb pattern); treat as absent.
    return rec.client.gone ? undefined : 'busy';
  }

  #attach(rec: VchanRecord, caller: Caller): VchanGrant {
    rec.client = { caller, gone: false };
    this.#hold(rec, caller);
    this.#log.debug({ handle: rec.handle, peerPid: caller.pid }, 'vchan client attached');
    return this.#grant(rec, 'client');
  }

  /**
   * VCHAN_CLIENT_INIT: attach to the server's vchan, waiting up to `timeoutMs`
   * (0: fail at once, Infinity: forever) for it to appear.
   */
  clientInit(caller: Caller, serverDomain: number, port: number, timeoutMs: number): Promise<VchanGrant> {
    try {
      this.#checkDomain(serverDomain);
      this.#checkPolicy(serverDomain, caller.domain, caller);
      if (this.#countFor(caller.connId) >= this.#limits.maxVchansPerConnection) {
        throw new RegistryError('ENOSPC', 'per-connection vchan limit reached');
      }
      this.#checkSides(caller);
      const key = keyOf(serverDomain, caller.domain, port);
      const found = this.#attachable(key);
      // The policy before EBUSY: a refused caller learns nothing about who is attached.
      const rec = found === 'busy' ? this.#byKey.get(key) : found;
      if (rec !== undefined) this.#refuse(caller, this.#clientRefusal(rec, caller), port);
      if (found !== undefined && found !== 'busy') return Promise.resolve(this.#attach(found, caller));
      // A vchan that has a client is never shared; a client that may wait waits for the server
      // to serve the port again, as for a port not served yet (docs/api.md "Serving many clients").
      if (timeoutMs === 0) {
        if (found === 'busy') throw new RegistryError('EBUSY', `vchan on port ${port} already has a client`);
        throw new RegistryError('ENOENT', `no server on port ${port} in domain ${serverDomain}`);
      }
      if (this.#waiters.size >= this.#limits.maxWaitingClients) throw new RegistryError('EAGAIN', 'too many waiting clients');
      const usage = this.#usageOf(caller);
      if (usage !== null && usage.waiters >= this.#limits.maxWaitingClientsPerUid) {
        throw new RegistryError(
          'EAGAIN',
          `waiting-client quota of ${caller.scope === 'guest' ? `domain ${caller.domain}` : `uid ${caller.uid}`} reached (limits.maxWaitingClientsPerUid = ${this.#limits.maxWaitingClientsPerUid})`,
        );
      }
      return new Promise<VchanGrant>((resolve, reject) => {
        const w: Waiter = { caller, key, resolve, reject, timer: undefined };
        if (usage !== null) usage.waiters++;
        if (Number.isFinite(timeoutMs)) {
          w.timer = setLongTimeout(() => {
            this.#failWaiter(w, new RegistryError('ETIMEDOUT', `no server on port ${port} within ${timeoutMs} ms`));
          }, timeoutMs);
        }
        this.#addWaiter(w);
        this.#log.debug({ conn: caller.connId, uid: caller.uid, serverDomain, port }, 'client waiting for a server');
      });
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #addWaiter(w: Waiter): void {
    this.#waiters.add(w);
    indexAdd(this.#waitersByKey, w.key, w);
    indexAdd(this.#waitersByConn, w.caller.connId, w);
  }

  /** Takes `w` out of every index; false if it was not waiting any more. */
  #removeWaiter(w: Waiter): boolean {
    if (!this.#waiters.delete(w)) return false;
    indexDelete(this.#waitersByKey, w.key, w);
    indexDelete(this.#waitersByConn, w.caller.connId, w);
    this.#releaseUsage(w.caller, { waiters: 1 });
    w.timer?.clear();
    return true;
  }

  #failWaiter(w: Waiter, err: Error): void {
    if (this.#removeWaiter(w)) w.reject(err);
  }

  #matchWaiters(key: string): void {
    const rec = this.#attachable(key);
    if (rec === undefined || rec === 'busy') return;
    let first: Waiter | undefined;
    // Only the waiters of this key, in the order they came (docs/security.md, "Quotas": setting a
    // vchan up never scans every vchan or every waiting client).
    for (const w of [...(this.#waitersByKey.get(key) ?? [])]) {
      // A waiter the new server does not accept is refused as if it had asked now, whatever
      // its place in the queue: waiting before the server exists must not let another uid
      // intercept it (docs/security.md, "Policy").
      const why = this.#clientRefusal(rec, w.caller);
      if (why !== null) {
        this.#log.warn({ conn: w.caller.connId, uid: w.caller.uid, port: rec.port, why }, 'vchan refused by policy');
        this.#failWaiter(w, new RegistryError('EPERM', why));
      } else first ??= w;
    }
    if (first === undefined) return;
    this.#removeWaiter(first);
    first.resolve(this.#attach(rec, first.caller));
  }

  /** VCHAN_CLOSE: only the connection that holds a side may close it. */
  close(caller: Caller, handle: number): void {
    const rec = this.#byHandle.get(handle);
    if (rec === undefined) throw new RegistryError('ENOENT', `no vchan ${handle}`);
    if (rec.server.caller.connId === caller.connId && !rec.server.gone) this.#leave(rec, 'server', 'closed');
    else if (rec.client?.caller.connId === caller.connId && !rec.client.gone) this.#leave(rec, 'client', 'closed');
    else throw new RegistryError('EPERM', `vchan ${handle} is not held by this connection`);
  }

  /** A local connection ended (close, crash or kill): every side it held leaves. */
  dropConnection(connId: number): void {
    for (const rec of [...(this.#byConn.get(connId) ?? [])]) {
      if (rec.server.caller.connId === connId && !rec.server.gone) this.#leave(rec, 'server', 'connection ended');
      if (rec.client?.caller.connId === connId && !rec.client.gone) this.#leave(rec, 'client', 'connection ended');
    }
    for (const w of [...(this.#waitersByConn.get(connId) ?? [])]) this.#failWaiter(w, new RegistryError('ECANCELED', 'connection ended'));
  }

  /**
   * One side leaves. Marking it CLOSED in shared memory and telling the survivor (an
   * EVENT_PEER_CLOSED to a local process, its pool interrupt for a guest) is the daemon's
   * stand-in for Xen's unmap notification (ring-protocol.md §5.3); harmless when the side
   * already did it itself.
   */
  #leave(rec: VchanRecord, role: Role, why: string): void {
    const ctl = rec.res.control;
    if (role === 'server') {
      rec.server.gone = true;
      this.#unhold(rec, rec.server.caller);
      // The port is free for a new server at once, even while the old client drains.
      if (this.#byKey.get(rec.key) === rec) this.#byKey.delete(rec.key);
      Atomics.store(ctl, OFF_SERVER_STATE / 4, STATE_CLOSED);
      rec.res.kickClient();
      this.#tellSurvivor(rec, rec.client);
    } else if (rec.client !== null) {
      rec.client.gone = true;
      this.#unhold(rec, rec.client.caller);
      Atomics.store(ctl, OFF_CLIENT_STATE / 4, STATE_CLOSED);
      rec.res.kickServer();
      this.#tellSurvivor(rec, rec.server);
    }
    this.#log.debug({ handle: rec.handle, role, why }, 'vchan side left');
    const clientGone = rec.client === null || rec.client.gone;
    if (rec.server.gone && clientGone) this.#free(rec);
  }

  /** A surviving local side hears of its peer's death over its own connection (§7.3). */
  #tellSurvivor(rec: VchanRecord, survivor: Party | null): void {
    if (survivor === null || survivor.gone || survivor.caller.scope !== 'local') return;
    this.onPeerClosed?.(survivor.caller.connId, rec.handle);
  }

  #free(rec: VchanRecord): void {
    this.#byHandle.delete(rec.handle);
    this.#releaseUsage(rec.server.caller, { bytes: regionLength(rec.res.geometry) });
    if (this.#byKey.get(rec.key) === rec) this.#byKey.delete(rec.key);
    rec.res.release();
    this.#log.debug({ handle: rec.handle }, 'vchan freed');
  }

  listDomains(): DomainInfo[] {
    return [...this.#domains.values()].sort((a, b) => a.id - b.id);
  }

  vchansOfDomain(id: number): number {
    let n = 0;
    for (const r of this.#byHandle.values()) if (r.serverDomain === id || r.clientDomain === id) n++;
    return n;
  }

  /**
   * Snapshot for LIST_VCHANS. A guest sees the vchans its domain is an endpoint of; an
   * unprivileged local caller only vchans a process of its uid holds.
   */
  listVchans(caller: Caller): VchanSnapshot[] {
    const out: VchanSnapshot[] = [];
    for (const rec of this.#byHandle.values()) {
      const visible =
        caller.scope === 'guest'
          ? rec.serverDomain === caller.domain || rec.clientDomain === caller.domain
          : caller.privileged || rec.server.caller.uid === caller.uid || (rec.client !== null && rec.client.caller.uid === caller.uid);
      if (!visible) continue;
      const ctl = rec.res.control;
      // Counters come from shared memory: informational only, never trusted for anything else.
      // A peer can write any wrap count; saturate at 2^53 − 1 as the wire requires (wire-protocol.md
      // §1), or encoding LIST_VCHANS would fail (EIO) for every caller, hiding every vchan.
      const bytes = (prodOff: number, wrapsOff: number): number =>
        Math.min(Number.MAX_SAFE_INTEGER, (Atomics.load(ctl, wrapsOff / 4) >>> 0) * 2 ** 32 + (Atomics.load(ctl, prodOff / 4) >>> 0));
      out.push({
        handle: rec.handle,
        serverDomain: rec.serverDomain,
        clientDomain: rec.clientDomain,
        port: rec.port,
        serverState: Atomics.load(ctl, OFF_SERVER_STATE / 4) >>> 0,
        clientState: Atomics.load(ctl, OFF_CLIENT_STATE / 4) >>> 0,
        c2sOrder: rec.res.geometry.c2sOrder,
        s2cOrder: rec.res.geometry.s2cOrder,
        serverPid: rec.server.gone ? 0 : rec.server.caller.pid,
        clientPid: rec.client === null || rec.client.gone ? 0 : rec.client.caller.pid,
        bytesClientToServer: bytes(OFF_C2S_PROD, OFF_C2S_WRAPS),
        bytesServerToClient: bytes(OFF_S2C_PROD, OFF_S2C_WRAPS),
        serverUid: rec.server.caller.uid,
        clientUid: rec.client?.caller.uid ?? 0,
      });
    }
    return out.sort((a, b) => a.handle - b.handle);
  }

  /** Daemon shutdown: every side is marked closed and kicked, everything released. */
  shutdown(): void {
    this.#refusalLog.flush();
    for (const w of [...this.#waiters]) this.#failWaiter(w, new RegistryError('ESHUTDOWN', 'daemon shutting down'));
    for (const rec of [...this.#byHandle.values()]) {
      if (!rec.server.gone) this.#leave(rec, 'server', 'shutdown');
      if (rec.client !== null && !rec.client.gone) this.#leave(rec, 'client', 'shutdown');
      if (this.#byHandle.has(rec.handle)) this.#free(rec);
    }
  }
}
