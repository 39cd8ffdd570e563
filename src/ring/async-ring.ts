/**
 * The awaitable half of the ring engine: blocking-style operations built from
 * the non-blocking tries of RingEndpoint plus a wait hook (an eventfd on the
 * host, an interrupt vector in a guest). Follows the request → fence → re-check
 * protocol of docs/ring-protocol.md §5.1, with a bounded spin first (§8).
 */
import { AbortError } from '../errors.js';
import { EOF, type RingEndpoint } from './endpoint.js';

/** Resolves after the peer kicked us (or spuriously); consumes the event. */
export interface WaitHook {
  wait(signal?: AbortSignal): Promise<void>;
}

export interface AsyncRingOptions {
  /**
   * Peer-index polls before sleeping. A sleep/wake costs ~30 µs per direction on
   * these VMs (reference/node-ecosystem.md §2.5); a poll costs ~15 ns.
   */
  spin?: number;
}

export const DEFAULT_SPIN = 400;

export class AsyncRing {
  readonly endpoint: RingEndpoint;
  readonly #hook: WaitHook;
  readonly #spin: number;

  constructor(endpoint: RingEndpoint, hook: WaitHook, options: AsyncRingOptions = {}) {
    this.endpoint = endpoint;
    this.#hook = hook;
    this.#spin = options.spin ?? DEFAULT_SPIN;
  }

  #spinReadable(min: number): boolean {
    const ep = this.endpoint;
    for (let i = 0; i < this.#spin; i++) if (ep.peekReadable() >= min) return true;
    return false;
  }

  #spinWritable(min: number): boolean {
    const ep = this.endpoint;
    for (let i = 0; i < this.#spin; i++) if (ep.peekWritable() >= min) return true;
    return false;
  }

  /** Waits until at least `min` bytes can be read, or the peer closed. */
  async waitReadable(min = 1, signal?: AbortSignal): Promise<void> {
    const ep = this.endpoint;
    for (;;) {
      signal?.throwIfAborted();
      if (this.#spinReadable(min)) return;
      if (!ep.prepareWaitReadable(min)) return;
      await this.#hook.wait(signal);
    }
  }

  /** Waits until at least `min` bytes can be written, or the peer closed. */
  async waitWritable(min = 1, signal?: AbortSignal): Promise<void> {
    const ep = this.endpoint;
    for (;;) {
      signal?.throwIfAborted();
      if (this.#spinWritable(min)) return;
      if (!ep.prepareWaitWritable(min)) return;
      await this.#hook.wait(signal);
    }
  }

  /** Stream read: resolves with ≥ 1 byte read, or EOF (-1) once the peer closed and all was read. */
  async read(dst: Uint8Array, signal?: AbortSignal): Promise<number> {
    for (;;) {
      const n = this.endpoint.tryRead(dst);
      if (n !== 0 || dst.length === 0) return n;
      await this.waitReadable(1, signal);
    }
  }

  /** Packet receive: resolves with dst.length, or EOF if the peer closed first. */
  async recv(dst: Uint8Array, signal?: AbortSignal): Promise<number> {
    for (;;) {
      const n = this.endpoint.tryRecv(dst);
      if (n !== 0 || dst.length === 0) return n;
      await this.waitReadable(dst.length, signal);
    }
  }

  /** Stream write of all bytes; rejects with ClosedError if the peer closes first. */
  async write(src: Uint8Array, signal?: AbortSignal): Promise<void> {
    let off = 0;
    while (off < src.length) {
      off += this.endpoint.tryWrite(src, off, src.length - off);
      if (off < src.length) await this.waitWritable(1, signal);
    }
  }

  /** Packet send, all-or-nothing; waits for room. */
  async send(src: Uint8Array, signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (this.endpoint.trySend(src) === src.length || src.length === 0) return;
      await this.waitWritable(src.length, signal);
    }
  }
}

export { EOF };

/** Races a promise against an AbortSignal (used by wait hooks). */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined, onAbort: () => void): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    onAbort();
    return Promise.reject(new AbortError(undefined, { cause: signal.reason }));
  }
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => {
      onAbort();
      reject(new AbortError(undefined, { cause: signal.reason }));
    };
    signal.addEventListener('abort', abort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', abort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', abort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
