/**
 * A client's connection to its local kvmchand (wire-protocol.md): version
 * handshake, requests matched to replies by seq, fds received with replies.
 * Each vchan owns one connection: when it closes (or the process dies) the
 * daemon releases that vchan, which is what makes crashes clean up.
 */
import { native } from '../native.js';
import { SeqpacketSocket } from '../transport/seqpacket.js';
import { ClientSequencer } from '../protocol/sequencer.js';
import { decodeDatagram } from '../protocol/frame.js';
import { Command, Event, MAX_FDS, MAX_FRAME, PROTOCOL_VERSION, type CommandId } from '../protocol/constants.js';
import type { AnyReply, ReplyOkOf, RequestBodies } from '../protocol/types.js';
import fs from 'node:fs';
import { DaemonAccessError, DaemonUnavailableError, KvmchanError, AbortError, UntrustedDaemonError } from '../errors.js';
import { defaultRuntimeDir, socketPath } from '../paths.js';

/** The daemon must run as root or as the calling user (docs/security.md, "Trust anchors"). */
export function checkDaemonCred(daemonUid: number, path: string): void {
  const self = process.geteuid?.() ?? 0;
  if (daemonUid !== 0 && daemonUid !== self) {
    throw new UntrustedDaemonError(
      `the daemon socket ${path} is served by uid ${daemonUid}, neither root nor this user (uid ${self}): refusing to use it`,
    );
  }
}

export class DaemonConnection {
  readonly #socket: SeqpacketSocket;
  readonly #seq: ClientSequencer;
  #lostHandlers: ((err: KvmchanError) => void)[] = [];
  /** Per vchan handle on this connection: its EVENT_PEER_CLOSED handler (wire-protocol.md §7.3). */
  readonly #peerClosed = new Map<number, () => void>();
  #closed = false;

  private constructor(fd: number) {
    this.#seq = new ClientSequencer({
      // A reply to a request we gave up on (an aborted connect) still holds fds: close them.
      onOrphanReply: (reply: AnyReply) => {
        for (const fd of reply.fds) native.close(fd);
      },
    });
    this.#socket = new SeqpacketSocket(fd, MAX_FRAME, MAX_FDS, {
      onMessage: (msg) => {
        let ev;
        try {
          ev = this.#seq.receive(decodeDatagram(msg.data, { fds: msg.fds }));
        } catch (err) {
          for (const fd of msg.fds) native.close(fd);
          this.#lose(new DaemonUnavailableError(`protocol error from kvmchand: ${(err as Error).message}`, { cause: err }));
          return;
        }
        if (ev?.id === Event.PEER_CLOSED) {
          // Only a vchan of this connection is kicked; a handle we no longer hold is ignored.
          this.#peerClosed.get(ev.body.handle)?.();
        } else if (ev !== undefined) {
          this.#lose(new DaemonUnavailableError('kvmchand is shutting down'));
        }
      },
      onClose: (err) => {
        this.#lose(new DaemonUnavailableError(err === null ? 'kvmchand closed the connection' : err.message));
      },
    });
    // Idle connections never keep a process alive; pending requests hold a ref.
    this.#socket.unref();
  }

  /** Connects to the daemon of `runtimeDir` (default: $KVMCHAN_RUNTIME_DIR or the system default). */
  static async open(runtimeDir?: string): Promise<DaemonConnection> {
    const path = socketPath(runtimeDir ?? defaultRuntimeDir());
    let fd: number;
    try {
      fd = native.connectUnix(path, 'seqpacket');
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'EACCES' || code === 'EPERM') {
        let group = '';
        try {
          group = ` (gid ${fs.statSync(path).gid})`;
        } catch {
          // The socket's directory is what refused us: no gid to name.
        }
        throw new DaemonAccessError(
          `permission denied on ${path}: only root and members of the socket's group${group}, by default kvmchan, may use kvmchand; join it (sudo usermod -aG kvmchan $USER, then log in again) or ask the operator (docs/operations.md)`,
          { cause: err },
        );
      }
      const hint = code === 'ENOENT' || code === 'ECONNREFUSED' ? ' (is kvmchand running? start it or set KVMCHAN_RUNTIME_DIR)' : '';
      throw new DaemonUnavailableError(`cannot connect to kvmchand at ${path}: ${code ?? String(err)}${hint}`, { cause: err });
    }
    // Whoever created the socket file, only root or ourselves may be the daemon: a socket
    // planted by another user would see every byte we send (docs/security.md, "Trust
    // anchors"). SO_PEERCRED is what the kernel recorded when the daemon called listen().
    try {
      checkDaemonCred(native.peerCred(fd).uid, path);
    } catch (err) {
      native.close(fd);
      throw err;
    }
    const conn = new DaemonConnection(fd);
    try {
      const v = await conn.request(Command.GET_VERSION, {});
      if (v.body.version !== PROTOCOL_VERSION) {
        throw new DaemonUnavailableError(`kvmchand speaks protocol ${v.body.version}, this library ${PROTOCOL_VERSION}`);
      }
    } catch (err) {
      conn.close();
      throw err;
    }
    return conn;
  }

  request<K extends CommandId>(id: K, body: RequestBodies[K], signal?: AbortSignal): Promise<ReplyOkOf<K>> {
    if (this.#closed) return Promise.reject(new DaemonUnavailableError('connection to kvmchand is closed'));
    const sent = this.#seq.request(id, body);
    this.#socket.send(sent.frame);
    this.#socket.ref();
    const done = (): void => {
      if (this.#seq.pendingCount === 0 && !this.#socket.closed) this.#socket.unref();
    };
    if (signal !== undefined) {
      const onAbort = (): void => {
        this.#seq.abandon(sent.seq, new AbortError(undefined, { cause: signal.reason }));
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      const detach = (): void => {
        signal.removeEventListener('abort', onAbort);
      };
      sent.reply.then(detach, detach);
    }
    sent.reply.then(done, done);
    return sent.reply;
  }

  onLost(cb: (err: KvmchanError) => void): void {
    this.#lostHandlers.push(cb);
  }

  onPeerClosed(handle: number, cb: () => void): void {
    this.#peerClosed.set(handle, cb);
  }

  probe(): void {
    if (!this.#closed) this.#socket.poll();
  }

  async ping(): Promise<void> {
    await this.request(Command.GET_VERSION, {});
  }

  #lose(err: KvmchanError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
    this.#seq.close(err);
    const handlers = this.#lostHandlers;
    this.#lostHandlers = [];
    this.#peerClosed.clear();
    for (const h of handlers) h(err);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#lostHandlers = [];
    this.#peerClosed.clear();
    this.#seq.close(new DaemonUnavailableError('connection closed'));
    this.#socket.close();
  }
}
