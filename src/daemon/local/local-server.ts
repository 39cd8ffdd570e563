/**
 * The local client socket (docs/security.md, "Local socket"): SOCK_SEQPACKET, mode 0660, group
 * `kvmchan` when that group exists; every accepted connection is identified by
 * SO_PEERCRED and handed to a LocalConnection.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import { native, READABLE, type Poller } from '../../native.js';
import { LocalConnection } from './local-connection.js';
import type { VchanService } from '../vchan-service.js';
import type { RegionService } from '../regions/region-registry.js';
import type { Limits } from '../config.js';
import { fromSystemError } from '../../errors.js';
import { groupId, isPrivileged } from './credentials.js';

export interface LocalServerOptions {
  socketPath: string;
  service: VchanService;
  /** Shared-memory regions (docs/shmem.md); without it the SHM_* commands are -EOPNOTSUPP. */
  regions?: RegionService;
  limits: Limits;
  socketGroup: string;
  /** Members of this group are privileged like root (docs/security.md); none by default. */
  adminGroup?: string | undefined;
  log: Logger;
}

export class LocalServer {
  readonly #fd: number;
  readonly #poller: Poller;
  readonly #opts: LocalServerOptions;
  readonly #log: Logger;
  /** By registry connection id, to route EVENT_PEER_CLOSED (wire-protocol.md §7.3). */
  readonly #conns = new Map<number, LocalConnection>();
  readonly #gid: number | undefined;
  readonly #adminGid: number | undefined;
  readonly #perUid = new Map<number, number>();
  #refusals = 0;
  #acceptFailures = 0;
  #acceptPause: NodeJS.Timeout | undefined;
  #nextConnId = 1;
  #closed = false;

  constructor(opts: LocalServerOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    try {
      this.#fd = native.listenUnix(opts.socketPath, 'seqpacket', 511, 0o660);
    } catch (err) {
      throw fromSystemError(err, `cannot listen on ${opts.socketPath}`);
    }
    this.#gid = groupId(opts.socketGroup);
    this.#adminGid = opts.adminGroup === undefined ? undefined : groupId(opts.adminGroup);
    if (opts.adminGroup !== undefined && this.#adminGid === undefined) {
      this.#log.warn({ group: opts.adminGroup }, 'adminGroup does not exist: only root is privileged');
    }
    if (this.#gid !== undefined && process.getuid?.() === 0) {
      fs.chownSync(opts.socketPath, 0, this.#gid);
    }
    this.#poller = new native.Poller(this.#fd, (err) => {
      if (err !== null) this.#log.error({ err }, 'listening socket poll failed');
      else this.#acceptAll();
    });
    this.#poller.start(READABLE);
  }

  get connectionCount(): number {
    return this.#conns.size;
  }

  /** The other side of vchan `handle` of connection `connId` is gone (wire-protocol.md §7.3). */
  notifyPeerClosed(connId: number, handle: number): void {
    this.#conns.get(connId)?.notifyPeerClosed(handle);
  }

  #acceptAll(): void {
    for (let i = 0; i < 128 && !this.#closed; i++) {
      let fd: number | null;
      try {
        fd = native.accept(this.#fd);
      } catch (err) {
        this.#acceptFailed(err);
        return;
      }
      if (fd === null) return;
      this.#adopt(fd);
    }
  }

  /**
   * accept() failed — EMFILE/ENFILE at the fd limit, most likely. The pending connection stays
   * queued and the listening socket stays readable, so retrying at once would spin at 100 % CPU
   * and log a line per try: stop watching for a while, and log once per pause.
   */
  #acceptFailed(err: unknown): void {
    const code = (err as { code?: string }).code ?? 'EIO';
    this.#acceptFailures++;
    if (this.#acceptPause !== undefined) return;
    this.#log.error(
      { code, failures: this.#acceptFailures, err: (err as Error).message },
      'accept failed; pausing new connections for 100 ms',
    );
    this.#acceptFailures = 0;
    this.#poller.stop();
    // Not unref()ed: with the listening socket unwatched this timer may be all that keeps the
    // event loop alive, and the daemon would exit (status 0) in the middle of a pause.
    this.#acceptPause = setTimeout(() => {
      this.#acceptPause = undefined;
      if (!this.#closed) this.#poller.start(READABLE);
    }, 100);
  }

  #adopt(fd: number): void {
    let cred;
    let groups: number[];
    try {
      cred = native.peerCred(fd);
      // Supplementary groups serve the admin group and the policy's allowGroups (docs/security.md).
      groups = cred.uid === 0 ? [] : native.peerGroups(fd);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'SO_PEERCRED/SO_PEERGROUPS failed; dropping connection');
      native.close(fd);
      return;
    }
    if (this.#conns.size >= this.#opts.limits.maxConnections) {
      this.#log.warn({ peerPid: cred.pid, uid: cred.uid }, 'connection limit reached; dropping connection');
      native.close(fd);
      return;
    }
    // One uid cannot take every connection slot (docs/security.md, "Quotas"); root is exempt.
    const mine = this.#perUid.get(cred.uid) ?? 0;
    if (cred.uid !== 0 && mine >= this.#opts.limits.maxConnectionsPerUid) {
      this.#refusals++;
      if (this.#refusals === 1 || this.#refusals % 1000 === 0) {
        this.#log.warn({ uid: cred.uid, refusals: this.#refusals }, 'per-uid connection quota reached; dropping connection');
      }
      native.close(fd);
      return;
    }
    this.#perUid.set(cred.uid, mine + 1);
    const connId = this.#nextConnId++;
    const caller = {
      connId,
      domain: this.#opts.service.localDomain,
      scope: 'local' as const,
      pid: cred.pid,
      uid: cred.uid,
      gid: cred.gid,
      privileged: isPrivileged(cred, groups, this.#adminGid),
      groups,
    };
    const conn = new LocalConnection({
      fd,
      caller,
      service: this.#opts.service,
      regions: this.#opts.regions,
      log: this.#log,
      handshakeTimeoutMs: this.#opts.limits.handshakeTimeoutMs,
      slowPeerTimeoutMs: this.#opts.limits.slowPeerTimeoutMs,
      onClosed: (c) => {
        this.#conns.delete(c.caller.connId);
        const left = (this.#perUid.get(c.caller.uid) ?? 1) - 1;
        if (left <= 0) this.#perUid.delete(c.caller.uid);
        else this.#perUid.set(c.caller.uid, left);
      },
    });
    this.#conns.set(connId, conn);
    this.#log.debug({ conn: connId, peerPid: cred.pid, uid: cred.uid }, 'client connected');
  }

  /**
   * End every client connection as close() does, but keep listening (a guest daemon between two
   * sessions with its host: no vchan survives a session, new clients are refused by the service
   * until the next one is up).
   */
  endConnections(): void {
    const conns = [...this.#conns.values()];
    for (const c of conns) c.notifyShutdown();
    for (const c of conns) c.shutdown();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#acceptPause);
    this.#poller.close();
    native.close(this.#fd);
    // Every client hears EVENT_SHUTDOWN before any vchan is marked closed: tearing down one
    // connection marks its vchans closed and kicks the peers, and a peer that saw that before
    // its own event would take the daemon's exit for an orderly close by the other side.
    const conns = [...this.#conns.values()];
    for (const c of conns) c.notifyShutdown();
    for (const c of conns) c.shutdown();
  }
}
