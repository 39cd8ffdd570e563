/**
 * Frames over a ring (wire-protocol.md §3.2, the stream transport): the
 * guest link (guest↔host) is a vchan region in the control device, and the
 * wire protocol's frames travel back to back through it. Sends are queued and
 * written in order; receives are fed to the incremental frame decoder.
 */
import { AsyncRing, type WaitHook } from '../ring/async-ring.js';
import { EOF, type RingEndpoint } from '../ring/endpoint.js';
import { FrameDecoder } from '../protocol/frame-decoder.js';
import type { Frame } from '../protocol/types.js';
import { KvmchanError } from '../errors.js';

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
  #writing = false;
  #closed = false;

  constructor(endpoint: RingEndpoint, hook: WaitHook, handlers: RingLinkHandlers) {
    this.#endpoint = endpoint;
    // The daemon never spins: control traffic is rare and CPU belongs to the guests' data.
    this.#ring = new AsyncRing(endpoint, hook, { spin: 0 });
    this.#handlers = handlers;
    void this.#readLoop();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async #readLoop(): Promise<void> {
    const buf = Buffer.allocUnsafe(64 * 1024);
    try {
      for (;;) {
        const n = await this.#ring.read(buf);
        if (this.#closed) return;
        if (n === EOF) {
          this.#fail(null);
          return;
        }
        for (const frame of this.#decoder.push(buf.subarray(0, n))) {
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
    if (!this.#writing) void this.#writeLoop();
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        await this.#ring.write(this.#queue.shift()!);
      }
    } catch (err) {
      this.#fail(err instanceof KvmchanError ? err : new KvmchanError(String(err), 'KVMCHAN_E_CONTROL'));
    } finally {
      this.#writing = false;
    }
  }

  #fail(err: KvmchanError | null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.length = 0;
    this.#handlers.onClose(err);
  }

  /** Close our side (state CLOSED + kick, ring-protocol.md §5.3) without calling onClose. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.length = 0;
    this.#endpoint.close();
  }
}
