/**
 * One client connection on the local socket. The caller's identity comes from
 * SO_PEERCRED when it connected (docs/security.md, "Local socket"), never from what it sends. Every
 * frame is untrusted: framing errors close this connection only; argument
 * errors are answered with -EINVAL and the connection carries on
 * (wire-protocol.md §5).
 */
import type { Logger } from 'pino';
import { native } from '../../native.js';
import { SeqpacketSocket, DEFAULT_SEQPACKET_LIMITS, type Datagram } from '../../transport/seqpacket.js';
import { decodeDatagram } from '../../protocol/frame.js';
import { decodeRequest, encodeErrorReply, encodeReply, encodeEvent } from '../../protocol/codec.js';
import { RequestSequence } from '../../protocol/sequencer.js';
import {
  Command,
  Errno,
  Event,
  MAX_FRAME,
  MAX_PAYLOAD,
  ShutdownReason,
  TIMEOUT_INFINITE,
  type CommandId,
} from '../../protocol/constants.js';
import type { AnyRequest, VchanInfo } from '../../protocol/types.js';
import { toWireInfo } from '../../protocol/views.js';
import { WireError } from '../../protocol/errors.js';
import { AllowMask } from '../../protocol/allow-mask.js';
import { answerHandshake, answerList, answerListRegions, isHandshake, isListRequest, type RequestContext } from '../request-handler.js';

import type { KvmchanError } from '../../errors.js';
import type { Caller } from '../registry/registry.js';
import { RegistryError, errnoOf } from '../registry/registry-error.js';
import type { Grant, VchanService } from '../vchan-service.js';
import type { RegionGrant, RegionService } from '../regions/region-registry.js';

const LOCAL_MASK = AllowMask.forKind('local');
/** Requests of one connection worked on at once (waiting CLIENT_INITs count). */
const MAX_IN_FLIGHT = 64;

export interface LocalConnectionOptions {
  fd: number;
  caller: Caller;
  service: VchanService;
  regions?: RegionService | undefined;
  log: Logger;
  handshakeTimeoutMs: number;
  /** How long the client may leave its replies unread before it is dropped. */
  slowPeerTimeoutMs?: number;
  onClosed: (conn: LocalConnection) => void;
}

export class LocalConnection {
  readonly caller: Caller;
  readonly #service: VchanService;
  readonly #regions: RegionService | undefined;
  readonly #log: Logger;
  readonly #socket: SeqpacketSocket;
  readonly #sequence = new RequestSequence();
  readonly #onClosed: (conn: LocalConnection) => void;
  readonly #context: RequestContext;
  #idleTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #shutdownSent = false;
  #inFlight = 0;

  constructor(opts: LocalConnectionOptions) {
    this.caller = opts.caller;
    this.#service = opts.service;
    this.#regions = opts.regions;
    this.#log = opts.log;
    this.#onClosed = opts.onClosed;
    this.#context = { service: opts.service, caller: opts.caller, allowed: LOCAL_MASK, transport: 'seqpacket' };
    // No request carries fds (wire-protocol.md §6): receive without a control buffer, so the
    // kernel discards any fd a client passes without it ever entering our fd table — closing
    // a hostile fd (a FUSE file whose flush hangs or fails) could block or fail us
    // (docs/security.md, "Passed fds"). Such a datagram arrives truncated and ends the connection.
    this.#socket = new SeqpacketSocket(
      opts.fd,
      MAX_FRAME,
      0,
      {
        onMessage: (msg) => {
          this.#onMessage(msg);
        },
        onClose: (err) => {
          this.#teardown(err, null);
        },
      },
      { ...DEFAULT_SEQPACKET_LIMITS, stallMs: opts.slowPeerTimeoutMs ?? DEFAULT_SEQPACKET_LIMITS.stallMs },
    );
    // A client that connects and never speaks is dropped (it would hold a slot forever).
    this.#idleTimer = setTimeout(() => {
      this.#teardown(null, 'no request within the handshake timeout');
    }, opts.handshakeTimeoutMs);
    this.#idleTimer.unref();
  }

  #onMessage(msg: Datagram): void {
    if (this.#closed) {
      for (const fd of msg.fds) native.close(fd);
      return;
    }
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    let frame;
    try {
      frame = decodeDatagram(msg.data, { fds: msg.fds, maxPayload: MAX_PAYLOAD });
    } catch (err) {
      for (const fd of msg.fds) native.close(fd);
      this.#protocolViolation(err as WireError);
      return;
    }
    const result = decodeRequest(frame, { transport: 'seqpacket', sequence: this.#sequence });
    // No v1 request carries fds; the codec refuses any it sees, and we own them either way.
    for (const fd of frame.fds) native.close(fd);
    if (!result.ok) {
      if (result.error.fatal) {
        this.#protocolViolation(result.error);
        return;
      }
      this.#log.debug({ conn: this.caller.connId, code: result.error.code, err: result.error.message }, 'request refused');
      const reply = encodeErrorReply(frame, result.error);
      if (reply !== undefined) this.#socket.send(reply);
      return;
    }
    const { id, seq } = frame;
    // At most MAX_IN_FLIGHT requests are worked on at once; the peer's next ones wait in its
    // socket, not in our heap (docs/security.md, "Queues").
    if (++this.#inFlight === MAX_IN_FLIGHT) this.#socket.pause();
    this.#dispatch(result.value)
      .catch((err: unknown) => {
        // Refusals and failures of one request stay with it: the daemon carries on.
        if (!this.#closed) this.#refuse(id as CommandId, seq, err);
      })
      .finally(() => {
        if (this.#inFlight-- === MAX_IN_FLIGHT) this.#socket.resume();
      });
  }

  #protocolViolation(err: WireError): void {
    this.#log.warn(
      { conn: this.caller.connId, peerPid: this.caller.pid, uid: this.caller.uid, code: err.code, err: err.message },
      'protocol violation, closing connection',
    );
    this.#teardown(null, null);
  }

  async #dispatch(req: AnyRequest): Promise<void> {
    if (isHandshake(req)) {
      this.#socket.send(answerHandshake(req, this.#context));
      return;
    }
    if (isListRequest(req)) {
      this.#socket.send(await answerList(req, this.#context));
      return;
    }
    switch (req.id) {
      case Command.VCHAN_SERVER_INIT: {
        const b = req.body;
        this.#sendGrant(req.id, req.seq, await this.#service.serverInit(this.caller, b.peerDomain, b.port, b.readMin, b.writeMin));
        return;
      }
      case Command.VCHAN_CLIENT_INIT: {
        const b = req.body;
        const timeout = b.timeoutMs === TIMEOUT_INFINITE ? Infinity : b.timeoutMs;
        this.#sendGrant(req.id, req.seq, await this.#service.clientInit(this.caller, b.serverDomain, b.port, timeout));
        return;
      }
      case Command.VCHAN_CLOSE:
        await this.#service.close(this.caller, req.body.handle);
        this.#socket.send(encodeReply(req.id, req.seq, 0, {}));
        return;
      case Command.SHM_SHARE:
        this.#sendRegion(req.id, req.seq, await this.#regionService().share(this.caller, req.body.domain, req.body.pages));
        return;
      case Command.SHM_MAP:
        this.#sendRegion(req.id, req.seq, await this.#regionService().map(this.caller, req.body.domain, req.body.id));
        return;
      case Command.SHM_UNMAP:
        await this.#regionService().unmap(this.caller, req.body.domain, req.body.id);
        this.#socket.send(encodeReply(req.id, req.seq, 0, {}));
        return;
      case Command.SHM_RELEASE:
        await this.#regionService().release(this.caller, req.body.id);
        this.#socket.send(encodeReply(req.id, req.seq, 0, {}));
        return;
      case Command.LIST_REGIONS:
        this.#socket.send(answerListRegions(req, this.#regionService(), this.caller));
        return;
    }
  }

  #regionService(): RegionService {
    if (this.#regions === undefined) throw new RegistryError('EOPNOTSUPP', 'shared-memory regions are not served here');
    return this.#regions;
  }

  #sendRegion(id: typeof Command.SHM_SHARE | typeof Command.SHM_MAP, seq: number, g: RegionGrant): void {
    if (this.#closed) {
      // The connection ended while the share waited for a pool or the host: the hold it just
      // got goes the way of the others (docs/shmem.md §3, point 5).
      this.#regions?.dropConnection(this.caller.connId);
      return;
    }
    // The region's fd stays the registry's; the kernel gives the client its own copy. The
    // registry already counts this hold: the connection's end gives it back, sent or not.
    const info = { id: g.id, ownerDomain: g.ownerDomain, targetDomain: g.targetDomain, pages: g.pages };
    this.#socket.send(encodeReply(id, seq, 0, { ...info, shmOffset: g.shmOffset, shmLength: g.shmLength }), [g.fd]);
  }

  #refuse(id: CommandId, seq: number, err: unknown): void {
    const errno = errnoOf(err);
    if (errno === -Errno.EIO) this.#log.error({ conn: this.caller.connId, err }, 'request failed');
    else this.#log.debug({ conn: this.caller.connId, err: (err as Error).message }, 'request refused');
    this.#socket.send(encodeReply(id, seq, errno));
  }

  #sendGrant(id: CommandId, seq: number, g: Grant): void {
    if (this.#closed) {
      // The connection went while the request was in flight; the service already released the vchan.
      g.release();
      return;
    }
    const a = g.access;
    if (a.kind !== 'fds') {
      g.release();
      throw new RegistryError('EIO', 'local endpoint without fds');
    }
    const info: VchanInfo = toWireInfo(g);
    this.#socket.send(encodeReply(id as typeof Command.VCHAN_SERVER_INIT, seq, 0, info), [a.shm, a.wait, a.kick]);
    g.release();
  }

  /** Daemon shutdown, step 1: tell the client why (wire-protocol.md §7.1). Idempotent. */
  notifyShutdown(): void {
    if (this.#closed || this.#shutdownSent) return;
    this.#shutdownSent = true;
    this.#socket.send(encodeEvent(Event.SHUTDOWN, { reason: ShutdownReason.STOP }));
  }

  /**
   * The other side of our vchan `handle` is gone and stored CLOSED (wire-protocol.md §7.3): the
   * client's library re-checks that ring. Queued like a reply, under the same output limits
   * (docs/security.md, "Queues"). Nothing follows EVENT_SHUTDOWN.
   */
  notifyPeerClosed(handle: number): void {
    if (this.#closed || this.#shutdownSent) return;
    this.#socket.send(encodeEvent(Event.PEER_CLOSED, { handle }));
  }

  /** Daemon shutdown, step 2: close the connection and release its vchans. */
  shutdown(): void {
    if (this.#closed) return;
    this.notifyShutdown();
    this.#teardown(null, null);
  }

  #teardown(err: KvmchanError | null, why: string | null): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    // A client that went away while we were telling it something (EVENT_PEER_CLOSED to a process
    // that exited with its peer) is no failure of ours.
    if (err !== null && (err.code === 'KVMCHAN_E_SYS_EPIPE' || err.code === 'KVMCHAN_E_SYS_ECONNRESET')) {
      this.#log.debug({ conn: this.caller.connId, code: err.code }, 'client went away');
    } else if (err !== null) this.#log.warn({ conn: this.caller.connId, code: err.code, err: err.message }, 'connection failed');
    else if (why !== null) this.#log.info({ conn: this.caller.connId, peerPid: this.caller.pid, why }, 'connection dropped');
    this.#socket.close();
    this.#service.dropConnection(this.caller.connId);
    this.#regions?.dropConnection(this.caller.connId);
    this.#onClosed(this);
  }
}
