/**
 * Frames over a ring (wire-protocol.md §3.2, the stream transport): the
 * guest link (guest↔host) is a vchan region in the control device, and the
 * wire protocol's frames travel back to back through it. Sends are queued and
 * written in order; receives are fed to the incremental frame decoder.
 *
 * With `limits`, the queue is bounded like a local connection's (docs/security.md, "Queues"): a peer that
 * does not read what we send makes us stop reading what it sends (its ring fills and it must
 * wait), and one that then reads nothing at all for `stallMs` is cut off with
 * KVMCHAN_E_SLOW_PEER. A slow reader (a guest under emulation) is only ever slowed down.
 */
import { AsyncRing, type WaitHook } from '../ring/async-ring.js';
import { EOF, type RingEndpoint } from '../ring/endpoint.js';
import { FrameDecoder } from '../protocol/frame-decoder.js';
import type { Frame } from '../protocol/types.js';
import { KvmchanError } from '../errors.js';
import { SlowPeerError, type SeqpacketLimits } from './seqpacket.js';

/** What a queued frame costs us besides its bytes (the Buffer object, the array slot). */
const ENTRY_OVERHEAD = 128;

/** No bound: for a link whose peer is trusted (a guest daemon's link to its host). */
const UNBOUNDED: SeqpacketLimits = { maxQueuedBytes: Infinity, stallMs: 2 ** 31 - 1 };

export interface RingLinkHandlers {
  onFrame(frame: Frame): void;
  /** The peer closed (err null) or the stream is broken (framing, corruption). Called once. */
  onClose(err: KvmchanError | null): void;
}

export class RingLink {
  readonly #ring: AsyncRing;
  readonly #endpoint: RingEndpoint;
  readonly #handlers: RingLinkHandlers;
  readonly #decoder = new FrameDecoder();
  readonly #queue: Buffer[] = [];
  readonly #limits: SeqpacketLimits;
  #queuedBytes = 0;
  #writing = false;
  #closed = false;
  /** Not reading: the peer left more than limits.maxQueuedBytes unread. */
  #backpressure = false;
  #holds = 0;
  #resumeReading: (() => void) | null = null;
  #stallTimer: NodeJS.Timeout | undefined;
  #lastProgress = 0;

  constructor(endpoint: RingEndpoint, hook: WaitHook, handlers: RingLinkHandlers, limits: SeqpacketLimits = UNBOUNDED) {
    this.#endpoint = endpoint;
    this.#limits = limits;
    // The daemon never spins: control traffic is rare and CPU belongs to the guests' data.
    this.#ring = new AsyncRing(endpoint, hook, { spin: 0 });
    this.#handlers = handlers;
    void this.#readLoop();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes queued for the peer that it has not read yet (whole frames). */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** True while we do not read because the peer does not read. */
  get backpressure(): boolean {
    return this.#backpressure;
  }

  /** Stop reading until resume() (holds count, as SeqpacketSocket's). */
  pause(): void {
    this.#holds++;
  }

  resume(): void {
    if (this.#holds > 0 && --this.#holds === 0) this.#wakeReader();
  }

  /** Resolves when reading may go on (at once unless the peer is behind or we were paused). */
  #mayRead(): Promise<void> | undefined {
    if (!this.#backpressure && this.#holds === 0) return undefined;
    return new Promise((resolve) => (this.#resumeReading = resolve));
  }

  #wakeReader(): void {
    if (!this.#closed && (this.#backpressure || this.#holds > 0)) return;
    const resume = this.#resumeReading;
    this.#resumeReading = null;
    resume?.();
  }

  async #readLoop(): Promise<void> {
    const buf = Buffer.allocUnsafe(64 * 1024);
    try {
      for (;;) {
        const held = this.#mayRead();
        if (held !== undefined) await held;
        if (this.#closed) return;
        const n = await this.#ring.read(buf);
        if (this.#closed) return;
        if (n === EOF) {
          this.#fail(null);
          return;
        }
        for (const frame of this.#decoder.push(buf.subarray(0, n))) {
          // A chunk can hold thousands of small requests: stop between them too.
          const wait = this.#mayRead();
          if (wait !== undefined) await wait;
          if (this.#closed) return;
          // The decoder may return views into buf: copy the payload before the next read reuses it.
          this.#handlers.onFrame({ ...frame, payload: Buffer.from(frame.payload) });
          if (this.#closed) return;
        }
      }
    } catch (err) {
      this.#fail(err instanceof KvmchanError ? err : new KvmchanError(String(err), 'KVMCHAN_E_CONTROL'));
    }
  }

  send(frame: Buffer): void {
    if (this.#closed) return;
    this.#queue.push(frame);
    this.#queuedBytes += frame.byteLength + ENTRY_OVERHEAD;
    if (!this.#backpressure && this.#queuedBytes > this.#limits.maxQueuedBytes) {
      this.#backpressure = true;
      this.#lastProgress = performance.now();
      this.#armStallTimer(this.#limits.stallMs);
    }
    if (!this.#writing) void this.#writeLoop();
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const frame = this.#queue[0]!;
        await this.#ring.write(frame);
        if (this.#closed) return;
        this.#queue.shift();
        this.#queuedBytes -= frame.byteLength + ENTRY_OVERHEAD;
        this.#lastProgress = performance.now();
        if (this.#backpressure && this.#queuedBytes <= this.#limits.maxQueuedBytes / 2) this.#endBackpressure();
      }
    } catch (err) {
      this.#fail(err instanceof KvmchanError ? err : new KvmchanError(String(err), 'KVMCHAN_E_CONTROL'));
    } finally {
      this.#writing = false;
    }
  }

  /** Cuts the peer off once it has read nothing for stallMs while we are over the limit. */
  #armStallTimer(ms: number): void {
    this.#stallTimer = setTimeout(() => {
      const idle = performance.now() - this.#lastProgress;
      if (idle >= this.#limits.stallMs) this.#fail(new SlowPeerError(this.#queuedBytes, this.#limits.stallMs));
      else this.#armStallTimer(this.#limits.stallMs - idle);
    }, ms);
    this.#stallTimer.unref();
  }

  #endBackpressure(): void {
    this.#backpressure = false;
    clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    this.#wakeReader();
  }

  #release(): void {
    this.#closed = true;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    // Lets a read loop that waits for the peer to catch up see the close and end.
    this.#endBackpressure();
  }

  #fail(err: KvmchanError | null): void {
    if (this.#closed) return;
    this.#release();
    this.#handlers.onClose(err);
  }

  /**
   * Stop using the ring without writing to it or calling onClose: it belongs to someone else now
   * (a host that started a new session in it, wire-protocol.md §3.2).
   */
  abandon(): void {
    this.#release();
  }

  /** Close our side (state CLOSED + kick, ring-protocol.md §5.3) without calling onClose. */
  close(): void {
    if (this.#closed) return;
    this.#release();
    this.#endpoint.close();
  }
}
