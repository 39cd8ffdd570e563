/**
 * A SOCK_SEQPACKET UNIX socket on the Node loop (wire-protocol.md, seqpacket
 * transport): one frame per datagram, fds travel with their frame. Node's `net`
 * cannot drive SEQPACKET or SCM_RIGHTS (docs/architecture.md, "The native addon"), so
 * this sits on the addon's sendmsg/recvmsg and a uv_poll watcher.
 */
import { native, READABLE, WRITABLE, DISCONNECT, type Poller, type RecvResult } from '../native.js';
import { KvmchanError, fromSystemError } from '../errors.js';

export interface Datagram {
  data: Buffer;
  fds: number[];
}

export interface SeqpacketHandlers {
  /** A datagram arrived; the handler owns its fds. Truncated datagrams are reported via onError. */
  onMessage(msg: Datagram): void;
  /** The peer closed or the socket failed; called once, after which the socket is closed. */
  onClose(err: KvmchanError | null): void;
}

export class TruncatedError extends KvmchanError {
  constructor(what: string) {
    super(`datagram truncated (${what})`, 'KVMCHAN_E_TRUNCATED');
    this.name = 'TruncatedError';
  }
}

export class SeqpacketSocket {
  readonly fd: number;
  readonly #maxLen: number;
  readonly #maxFds: number;
  readonly #handlers: SeqpacketHandlers;
  readonly #poller: Poller;
  readonly #queue: { data: Uint8Array; fds: number[] }[] = [];
  #closed = false;
  #refed = true;

  /** Takes ownership of `fd` (a connected, non-blocking SEQPACKET socket). */
  constructor(fd: number, maxLen: number, maxFds: number, handlers: SeqpacketHandlers) {
    this.fd = fd;
    this.#maxLen = maxLen;
    this.#maxFds = maxFds;
    this.#handlers = handlers;
    this.#poller = new native.Poller(fd, (err, events) => {
      this.#onPoll(err, events);
    });
    this.#poller.start(READABLE | DISCONNECT);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #onPoll(err: Error | null, events: number): void {
    if (this.#closed) return;
    if (err !== null) {
      this.#fail(fromSystemError(err, 'socket poll'));
      return;
    }
    if ((events & WRITABLE) !== 0) this.#flush();
    if ((events & (READABLE | DISCONNECT)) !== 0) this.#drain();
  }

  #drain(): void {
    // Bounded batch per wake-up so one chatty peer cannot starve the loop.
    for (let i = 0; i < 64 && !this.#closed; i++) {
      let r: RecvResult | null;
      try {
        r = native.recvmsg(this.fd, this.#maxLen, this.#maxFds);
      } catch (err) {
        this.#fail(fromSystemError(err, 'recvmsg'));
        return;
      }
      if (r === null) return;
      if (r.eof) {
        for (const fd of r.fds) native.close(fd);
        this.#fail(null);
        return;
      }
      if (r.truncated || r.fdsTruncated) {
        for (const fd of r.fds) native.close(fd);
        this.#fail(new TruncatedError(r.truncated ? 'payload' : 'file descriptors'));
        return;
      }
      this.#handlers.onMessage({ data: r.data, fds: r.fds });
    }
  }

  /**
   * Receive whatever is queued now, synchronously, instead of waiting for the poll callback
   * (handlers run as usual, including onClose for a peer that has gone).
   */
  poll(): void {
    if (!this.#closed) this.#drain();
  }

  /** Queue a datagram; fds are duplicated by the kernel on send, the caller keeps its own. */
  send(data: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closed) return;
    if (this.#queue.length === 0 && this.#trySend(data, fds)) return;
    // Keep our own copies: the caller may close its fds once send() returns.
    this.#queue.push({ data: Uint8Array.from(data), fds: fds.map((fd) => native.dup(fd)) });
    this.#poller.start(READABLE | WRITABLE | DISCONNECT);
  }

  #trySend(data: Uint8Array, fds: readonly number[]): boolean {
    try {
      native.sendmsg(this.fd, data, fds);
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'EAGAIN') return false;
      this.#fail(fromSystemError(err, 'sendmsg'));
      return true;
    }
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const head = this.#queue[0]!;
      if (!this.#trySend(head.data, head.fds)) return;
      this.#queue.shift();
      for (const fd of head.fds) native.close(fd);
    }
    if (!this.#closed) this.#poller.start(READABLE | DISCONNECT);
  }

  get pendingSends(): number {
    return this.#queue.length;
  }

  ref(): void {
    this.#refed = true;
    if (!this.#closed) this.#poller.ref();
  }

  unref(): void {
    this.#refed = false;
    if (!this.#closed) this.#poller.unref();
  }

  get refed(): boolean {
    return this.#refed;
  }

  #fail(err: KvmchanError | null): void {
    if (this.#closed) return;
    this.#release();
    this.#handlers.onClose(err);
  }

  #release(): void {
    this.#closed = true;
    this.#poller.close();
    for (const q of this.#queue.splice(0)) for (const fd of q.fds) native.close(fd);
    native.close(this.fd);
  }

  /** Close without calling onClose. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#release();
  }
}
