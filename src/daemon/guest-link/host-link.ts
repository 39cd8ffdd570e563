/**
 * The host end of one guest link (docs/architecture.md "Guests", docs/wire-protocol.md §6.8): a ring in
 * the guest's control device (IVPosition 1 for the guest, peer 0 for us), the
 * wire protocol's stream transport on top. The guest's identity is the device
 * it is attached to — never anything it sends (architecture.md rule 4). Every
 * frame is untrusted: a framing error ends the session (the guest is
 * disconnected and every vchan it held is closed); argument errors get -EINVAL.
 * What a guest can make us hold is bounded (docs/security.md, "Guests"): replies it does not
 * read (we stop reading its requests, then cut the session), the `conn` values it names (only
 * successful inits create one, at most maxConnections) and the log lines its refusals cause.
 */
import type { Logger } from 'pino';
import type { HostDevice } from '../../ivshmem/host-device.js';
import { native } from '../../native.js';
import { RingEndpoint } from '../../ring/endpoint.js';
import { EventFdWaiter } from '../../ring/eventfd-waiter.js';
import { initializeRegion, regionLength } from '../../ring/layout.js';
import { RingLink } from '../../transport/ring-link.js';
import { decodeRequest, encodeErrorReply, encodeReply, encodeEvent } from '../../protocol/codec.js';
import { RequestSequence } from '../../protocol/sequencer.js';
import { AllowMask } from '../../protocol/allow-mask.js';
import { Command, Errno, Event, TIMEOUT_INFINITE, type CommandId } from '../../protocol/constants.js';
import { toWireInfo } from '../../protocol/views.js';
import type { Grant, VchanService } from '../vchan-service.js';
import type { AnyRequest, Frame } from '../../protocol/types.js';
import type { Caller } from '../registry/registry.js';
import { RegistryError, errnoOf } from '../registry/registry-error.js';
import { answerHandshake, answerList, isHandshake, isListRequest } from '../request-handler.js';
import { RateLimitedLog } from '../rate-limited-log.js';
import type { RegionGrant, RegionService } from '../regions/region-registry.js';

/** Replies a guest may leave unread before we stop reading its requests (as for a local client). */
const MAX_QUEUED_REPLY_BYTES = 1 << 20;

/** Geometry of the control ring: 64 KiB each way fits in the 256 KiB control device. */
export const CONTROL_GEOMETRY = { c2sOrder: 16, s2cOrder: 16 };
export const CONTROL_DEVICE_SIZE = 256 * 1024;
/** The guest's IVPosition on its control device (architecture.md rule 2). */
export const GUEST_CONTROL_PEER = 1;
/**
 * The session word (wire-protocol.md §3.2): a u32 right after the control ring, page-aligned,
 * that the host bumps every time it offers a fresh session. A guest daemon whose host was
 * restarted under it (the ring re-initialised while it was attached) sees the change.
 */
export const CONTROL_SESSION_OFFSET = regionLength(CONTROL_GEOMETRY);

/** The session word of a control device (a guest-writable value: only ever compared). */
export function readSessionWord(mapping: ArrayBuffer, base = 0): number {
  return Atomics.load(new Uint32Array(mapping, CONTROL_SESSION_OFFSET - base, 1), 0);
}

export interface PoolAnnouncement {
  pool: number;
  peerId: number;
  vectors: number;
  size: number;
  /** Socket file name inside the guest's device directory. */
  socket: string;
}

export interface HostLinkOptions {
  domain: number;
  name: string;
  device: HostDevice;
  /** The host's request path, the same one the local socket uses; callers are scoped to this guest. */
  service: VchanService;
  /** Shared-memory regions (docs/shmem.md §6); without it the GUEST_SHM_* commands are -EOPNOTSUPP. */
  regions?: RegionService;
  log: Logger;
  /** Guest connections (`conn` values) with a vchan or an init in flight, at most. */
  maxConnections: number;
  /** How long the guest may leave over 1 MiB of replies unread before the session is cut. */
  slowPeerTimeoutMs: number;
  /** Current pools of this guest, announced right after HELLO. */
  pools: () => PoolAnnouncement[];
  /** Called when the session ends badly, so the guest can be cut off the fabric. */
  onViolation: (why: string) => void;
  /**
   * Called when the guest closed its end of the control channel without leaving the device: a
   * guest daemon in a real VM (VFIO) cannot leave it (QEMU is the device's peer), so a restarted
   * guest daemon closes the previous session's channel and waits for a fresh offer.
   */
  onGuestClosed?: () => void;
}

/** One of the guest's connections as the registry knows it. */
interface GuestConn {
  id: number;
  /** An init on it succeeded: it lives until GUEST_CONN_CLOSED or the end of the session. */
  established: boolean;
  /** Inits on it not answered yet. */
  pending: number;
}

/** A caller in guest `domain`: sees what that domain is part of, no host pids. */
function guestCaller(connId: number, domain: number): Caller {
  return { connId, domain, scope: 'guest', pid: 0, uid: 0, gid: 0, privileged: false };
}

export class HostLink {
  readonly domain: number;
  readonly #opts: HostLinkOptions;
  readonly #log: Logger;
  readonly #mapping: ArrayBuffer;
  readonly #waiter: EventFdWaiter;
  readonly #link: RingLink;
  readonly #sequence = new RequestSequence();
  readonly #allowed = AllowMask.forKind('guest-control');
  /** Guest-local connection id → our registry connId (so a guest cannot name another's). */
  readonly #conns = new Map<number, GuestConn>();
  /** Refusals are the guest's to cause: logged rate-limited. */
  readonly #refusals: RateLimitedLog;
  readonly #allocConnId: () => number;
  #hello = false;
  #closed = false;

  /** Call when the guest has attached to its control device: initialises the ring and rings it. */
  constructor(opts: HostLinkOptions, allocConnId: () => number) {
    this.domain = opts.domain;
    this.#opts = opts;
    this.#allocConnId = allocConnId;
    this.#log = opts.log.child({ domain: opts.domain });
    this.#refusals = new RateLimitedLog(this.#log);
    const kick = opts.device.doorbellFd(GUEST_CONTROL_PEER, 0);
    if (kick === null) throw new RegistryError('ENODEV', `guest ${opts.domain} has no control doorbell`);
    this.#mapping = opts.device.map(0, regionLength(CONTROL_GEOMETRY));
    // A new session word first (wire-protocol.md §3.2): a guest daemon still in the previous
    // session sees it on its next wake-up and lets go of the ring before using it again.
    const page = opts.device.map(CONTROL_SESSION_OFFSET, 4096);
    try {
      const word = new Uint32Array(page, 0, 1);
      const next = (Atomics.load(word, 0) + 1) >>> 0;
      Atomics.store(word, 0, next === 0 ? 1 : next);
    } finally {
      opts.device.unmap(page);
    }
    // A fresh session every time the guest attaches: stale state from a previous guest daemon is wiped.
    initializeRegion(this.#mapping, 0, CONTROL_GEOMETRY);
    this.#waiter = new EventFdWaiter(native.dup(opts.device.interruptFd(0)), native.dup(kick));
    this.#waiter.keepAlive = false;
    const endpoint = new RingEndpoint(this.#mapping, 0, { role: 'server', ...CONTROL_GEOMETRY }, this.#waiter.kick);
    this.#link = new RingLink(
      endpoint,
      this.#waiter,
      {
        onFrame: (f) => {
          this.#onFrame(f);
        },
        onClose: (err) => {
          // Framing errors caught by the stream decoder (oversize header...) and a corrupted control
          // ring arrive here, not through #onFrame: log their stable code too, so the log names the
          // guest's misbehaviour the same way for every kind of violation.
          this.#end(err === null ? 'guest closed its control channel' : `control channel failed: ${err.code} ${err.message}`, err !== null);
          if (err === null) this.#opts.onGuestClosed?.();
        },
      },
      { maxQueuedBytes: MAX_QUEUED_REPLY_BYTES, stallMs: opts.slowPeerTimeoutMs },
    );
    // Tell the guest the region is ready (it waits for this before attaching).
    this.#waiter.kick();
    this.#log.info('guest control channel offered');
  }

  /** The guest's daemon completed GUEST_HELLO and the session is open. */
  get helloDone(): boolean {
    return this.#hello && !this.#closed;
  }

  /**
   * Runs an init on the guest's connection `conn`. A `conn` we do not know yet gets a registry
   * connection that is kept only if an init on it succeeds: refused inits with fresh `conn`
   * values leave nothing behind, and at most maxConnections are open at once.
   */
  async #onConn<T>(conn: number, init: (caller: Caller) => Promise<T>): Promise<T> {
    let c = this.#conns.get(conn);
    if (c === undefined) {
      if (this.#conns.size >= this.#opts.maxConnections) {
        throw new RegistryError('EDQUOT', `guest connection quota reached (${this.#opts.maxConnections})`);
      }
      c = { id: this.#allocConnId(), established: false, pending: 0 };
      this.#conns.set(conn, c);
    }
    const entry = c;
    entry.pending++;
    let ok = false;
    try {
      const result = await init(guestCaller(entry.id, this.domain));
      ok = true;
      return result;
    } finally {
      entry.pending--;
      if (ok) entry.established = true;
      else if (!entry.established && entry.pending === 0 && this.#conns.get(conn) === entry) {
        this.#conns.delete(conn);
        this.#dropConn(entry.id);
      }
      // GUEST_CONN_CLOSED (or the session's end) came while this ran: what it obtained goes too.
      if (ok && this.#conns.get(conn) !== entry) this.#dropConn(entry.id);
    }
  }

  /** Everything a guest connection holds goes: vchan endpoints, region holds and regions it made. */
  #dropConn(id: number): void {
    this.#opts.service.dropConnection(id);
    this.#opts.regions?.dropConnection(id);
  }

  #regions(): RegionService {
    if (this.#opts.regions === undefined) throw new RegistryError('EOPNOTSUPP', 'shared-memory regions are not served here');
    return this.#opts.regions;
  }

  /** Who the guest's `conn` is for a request that creates nothing (an unknown one holds nothing). */
  #existing(conn: number): Caller {
    return guestCaller(this.#conns.get(conn)?.id ?? -1, this.domain);
  }

  #onFrame(frame: Frame): void {
    if (this.#closed) return;
    const r = decodeRequest(frame, { transport: 'stream', sequence: this.#sequence, allowed: (id) => this.#allowed.allows(id) });
    if (!r.ok) {
      if (r.error.fatal) {
        this.#end(`protocol violation: ${r.error.code} ${r.error.message}`, true);
        return;
      }
      this.#refusals.warn({ code: r.error.code, err: r.error.message }, 'guest request refused');
      const reply = encodeErrorReply(frame, r.error);
      if (reply !== undefined) this.#link.send(reply);
      return;
    }
    const req = r.value;
    if (!this.#hello && req.id !== Command.GUEST_HELLO && req.id !== Command.GET_VERSION && req.id !== Command.CHECK_COMMAND) {
      this.#link.send(encodeReply(req.id, req.seq, -Errno.EPERM));
      return;
    }
    this.#dispatch(req).catch((err: unknown) => {
      if (this.#closed) return;
      const errno = errnoOf(err);
      if (errno === -Errno.EIO) this.#refusals.error({ err }, 'guest request failed');
      else this.#refusals.info({ err: (err as Error).message }, 'guest request refused');
      this.#link.send(encodeReply(req.id, req.seq, errno));
    });
  }

  async #dispatch(req: AnyRequest): Promise<void> {
    const service = this.#opts.service;
    // Handshake and lists are not tied to one of the guest's connections: the domain asks.
    const ctx = { service, caller: guestCaller(-1, this.domain), allowed: this.#allowed, transport: 'stream' as const };
    if (isHandshake(req)) {
      this.#link.send(answerHandshake(req, ctx));
      return;
    }
    if (isListRequest(req)) {
      const reply = await answerList(req, ctx);
      if (!this.#closed) this.#link.send(reply);
      return;
    }
    switch (req.id) {
      case Command.GUEST_HELLO:
        this.#hello = true;
        this.#link.send(encodeReply(req.id, req.seq, 0, { domain: this.domain, name: this.#opts.name }));
        for (const p of this.#opts.pools()) this.announcePool(p);
        this.#log.info('guest daemon attached');
        return;
      case Command.GUEST_VCHAN_SERVER_INIT: {
        const b = req.body;
        const g = await this.#onConn(b.conn, (caller) => service.serverInit(caller, b.peerDomain, b.port, b.readMin, b.writeMin));
        this.#sendGrant(req.id, req.seq, g);
        return;
      }
      case Command.GUEST_VCHAN_CLIENT_INIT: {
        const b = req.body;
        const timeout = b.timeoutMs === TIMEOUT_INFINITE ? Infinity : b.timeoutMs;
        const g = await this.#onConn(b.conn, (caller) => service.clientInit(caller, b.serverDomain, b.port, timeout));
        if (this.#closed) {
          g.release();
          return;
        }
        this.#sendGrant(req.id, req.seq, g);
        return;
      }
      case Command.GUEST_VCHAN_CLOSE:
        await service.close(this.#existing(req.body.conn), req.body.handle);
        this.#link.send(encodeReply(req.id, req.seq, 0, {}));
        return;
      case Command.GUEST_CONN_CLOSED: {
        const c = this.#conns.get(req.body.conn);
        if (c !== undefined) {
          this.#conns.delete(req.body.conn);
          this.#dropConn(c.id);
        }
        this.#link.send(encodeReply(req.id, req.seq, 0, {}));
        return;
      }
      // docs/shmem.md §6: the guest's regions, each request for one of its local connections.
      case Command.GUEST_SHM_SHARE: {
        const b = req.body;
        const g = await this.#onConn(b.conn, (caller) => this.#regions().share(caller, b.domain, b.pages));
        this.#sendRegion(req.id, req.seq, g);
        return;
      }
      case Command.GUEST_SHM_MAP: {
        const b = req.body;
        const g = await this.#onConn(b.conn, async (caller) => this.#regions().map(caller, b.domain, b.id));
        this.#sendRegion(req.id, req.seq, g);
        return;
      }
      case Command.GUEST_SHM_UNMAP:
        await this.#regions().unmap(this.#existing(req.body.conn), req.body.domain, req.body.id);
        this.#link.send(encodeReply(req.id, req.seq, 0, {}));
        return;
      case Command.GUEST_SHM_RELEASE:
        await this.#regions().release(this.#existing(req.body.conn), req.body.id);
        this.#link.send(encodeReply(req.id, req.seq, 0, {}));
        return;
      default:
        this.#link.send(encodeReply(req.id, req.seq, -Errno.EPERM));
    }
  }

  #sendRegion(id: typeof Command.GUEST_SHM_SHARE | typeof Command.GUEST_SHM_MAP, seq: number, g: RegionGrant): void {
    if (this.#closed) return;
    // Only pool-backed regions are mappable by a guest (mayMap keeps host-only ones from it).
    if (g.pool === undefined) throw new RegistryError('EIO', `region ${g.id} is not in a pool`);
    // No fd on a stream: the guest maps the extent through its own pool device.
    const info = { id: g.id, ownerDomain: g.ownerDomain, targetDomain: g.targetDomain, pages: g.pages, pool: g.pool };
    this.#link.send(encodeReply(id, seq, 0, { ...info, shmOffset: g.shmOffset, shmLength: g.shmLength }));
  }

  #sendGrant(id: CommandId, seq: number, g: Grant): void {
    const a = g.access;
    if (a.kind !== 'device') throw new RegistryError('EIO', 'guest endpoint without device access');
    this.#link.send(
      encodeReply(id as typeof Command.GUEST_VCHAN_SERVER_INIT, seq, 0, {
        ...toWireInfo(g),
        pool: a.pool,
        vector: a.vector,
        peerId: a.peerId,
        peerVector: a.peerVector,
        shmOffset: g.shmOffset,
        shmLength: g.shmLength,
      }),
    );
    g.release();
  }

  /** Tell the guest about a pool device to attach to (architecture.md rule 2). */
  announcePool(p: PoolAnnouncement): void {
    if (this.#closed || !this.#hello) return;
    this.#link.send(encodeEvent(Event.POOL_ADDED, { pool: p.pool, peerId: p.peerId, vectors: p.vectors, size: p.size, socket: p.socket }));
  }

  #end(why: string, violation: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    if (violation) this.#log.warn({ why }, 'guest control channel closed');
    else this.#log.info({ why }, 'guest control channel closed');
    this.#link.close();
    this.#release();
    if (violation) this.#opts.onViolation(why);
  }

  #release(): void {
    for (const c of this.#conns.values()) this.#dropConn(c.id);
    this.#conns.clear();
    this.#refusals.flush();
    this.#waiter.close();
    this.#opts.device.unmap(this.#mapping);
  }

  /** The guest left the fabric (or the daemon stops): end the session, release its vchans. */
  close(why = 'guest left'): void {
    this.#end(why, false);
  }
}
