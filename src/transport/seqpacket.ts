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

/** Bounds on what a socket queues for a peer that does not read (docs/security.md, "Queues"). */
export interface SeqpacketLimits {
  /** Above this many queued bytes we stop reading the peer; below half of it we read again. */
  maxQueuedBytes: number;
  /** A peer whose queue stays above the limit this long is cut off (KVMCHAN_E_SLOW_PEER). */
  stallMs: number;
}

/** Generous for honest clients (a reply is at most MAX_FRAME), small next to the daemon's heap. */
export const DEFAULT_SEQPACKET_LIMITS: SeqpacketLimits = { maxQueuedBytes: 1 << 20, stallMs: 10_000 };

/** What a queued datagram costs us besides its bytes (objects, the copy's header): counted too. */
const ENTRY_OVERHEAD = 256;

export class SlowPeerError extends KvmchanError {
  constructor(bytes: number, ms: number) {
    super(`the peer left ${bytes} bytes of replies unread for ${ms} ms`, 'KVMCHAN_E_SLOW_PEER');
    this.name = 'SlowPeerError';
  }
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
  readonly #limits: SeqpacketLimits;
  #queuedBytes = 0;
  /** Reasons not to read now: a full output queue, and holds taken with pause(). */
  #backpressure = false;
  #holds = 0;
  #stallTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #refed = true;

  /** Takes ownership of `fd` (a connected, non-blocking SEQPACKET socket). */
  constructor(fd: number, maxLen: number, maxFds: number, handlers: SeqpacketHandlers, limits: SeqpacketLimits = DEFAULT_SEQPACKET_LIMITS) {
    this.fd = fd;
    this.#maxLen = maxLen;
    this.#maxFds = maxFds;
    this.#handlers = handlers;
    this.#limits = limits;
    this.#poller = new native.Poller(fd, (err, events) => {
      this.#onPoll(err, events);
    });
    this.#poller.start(READABLE | DISCONNECT);
  }

  get #reading(): boolean {
    return !this.#backpressure && this.#holds === 0;
  }

  /** Watch for what we can act on: input only while reading, output while something is queued. */
  #watch(): void {
    if (this.#closed) return;
    this.#poller.start((this.#reading ? READABLE : 0) | (this.#queue.length > 0 ? WRITABLE : 0) | DISCONNECT);
  }

  /**
   * Stop reading until resume() (a connection with too much work in flight): the peer's further
   * requests wait in the kernel's socket buffer, then in its own send(), not in our heap.
   */
  pause(): void {
    this.#holds++;
    if (this.#holds === 1) this.#watch();
  }

  resume(): void {
    if (this.#holds === 0) return;
    this.#holds--;
    if (this.#holds === 0) this.#watch();
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
    if (this.#closed) return;
    if (this.#reading && (events & (READABLE | DISCONNECT)) !== 0) this.#drain();
    // Not reading and the peer hung up: nobody is left to read our replies.
    else if (!this.#reading && (events & DISCONNECT) !== 0) this.#fail(null);
  }

  #drain(): void {
    // Bounded batch per wake-up so one chatty peer cannot starve the loop.
    for (let i = 0; i < 64 && !this.#closed && this.#reading; i++) {
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
    this.#queuedBytes += data.byteLength + ENTRY_OVERHEAD;
    if (!this.#backpressure && this.#queuedBytes > this.#limits.maxQueuedBytes) {
      // A peer that does not read its replies: stop reading its requests, and cut it off if
      // it does not catch up (docs/security.md, "Queues").
      this.#backpressure = true;
      this.#stallTimer = setTimeout(() => {
        this.#fail(new SlowPeerError(this.#queuedBytes, this.#limits.stallMs));
      }, this.#limits.stallMs);
      this.#stallTimer.unref();
    }
    this.#watch();
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
      if (!this.#trySend(head.data, head.fds)) break;
      this.#queue.shift();
      this.#queuedBytes -= head.data.byteLength + ENTRY_OVERHEAD;
      for (const fd of head.fds) native.close(fd);
    }
    if (this.#backpressure && this.#queuedBytes <= this.#limits.maxQueuedBytes / 2) {
      this.#backpressure = false;
      clearTimeout(this.#stallTimer);
      this.#stallTimer = undefined;
    }
    this.#watch();
  }

  /** Bytes of replies queued for a peer that has not read them yet. */
  get queuedBytes(): number {
    return this.#queuedBytes;
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
    clearTimeout(this.#stallTimer);
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
