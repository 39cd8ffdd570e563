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
   * Longest spin before sleeping, in microseconds (0: never spin). The actual
   * spin adapts between 0 and this: a sleep/wake costs ~30 µs per direction on
   * these VMs (docs/ring-protocol.md §8), so a spin shorter than that
   * never catches a peer that is itself waking up, and both sides would settle
   * into sleeping in turn.
   */
  spin?: number;
}

export const DEFAULT_SPIN_US = 100;
const MIN_SPIN_US = 2;
/**
 * Longest run of operations that complete without waiting before one yields to the event loop
 * (docs/ring-protocol.md §8.2). Against a peer that keeps pace, every read and write finds data or
 * room at once (or after a spin) and resolves through microtasks only: the event loop would never
 * reach its I/O phase, so a lost daemon socket, timers and other streams would go unserved for
 * as long as the transfer lasts (minutes were seen in a guest).
 */
const TURN_MS = 10;
/** Operations between two looks at the clock (performance.now() costs as much as a small write). */
const TURN_CHECK_EVERY = 16;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class AsyncRing {
  readonly endpoint: RingEndpoint;
  readonly #hook: WaitHook;
  readonly #maxSpin: number;
  /** Current spin budget (µs), adapted after every spin. */
  #spin: number;
  #waits = 0;
  #ops = 0;
  /** When the event loop last ran on our behalf: a wait on the hook, or a yield. */
  #lastTurn = performance.now();

  constructor(endpoint: RingEndpoint, hook: WaitHook, options: AsyncRingOptions = {}) {
    this.endpoint = endpoint;
    this.#hook = hook;
    this.#maxSpin = Math.max(0, options.spin ?? DEFAULT_SPIN_US);
    this.#spin = this.#maxSpin;
  }

  /**
   * Polls `ready` for up to the current budget; time is read every 64 polls (~1.5 µs).
   * The budget adapts (ring-protocol.md §8): it doubles when a spin catches the
   * peer and halves when it does not, so spinning stops when it only steals CPU
   * from a peer that shares it; every 64th wait probes with the full budget.
   */
  #spinUntil(ready: () => boolean): boolean {
    if (this.#maxSpin === 0) return false;
    const probe = (++this.#waits & 63) === 0;
    const budget = probe ? this.#maxSpin : this.#spin;
    if (budget < MIN_SPIN_US) return false;
    const deadline = performance.now() + budget / 1000;
    for (;;) {
      for (let i = 0; i < 64; i++) {
        if (ready()) {
          this.#spin = Math.min(this.#maxSpin, Math.max(MIN_SPIN_US * 2, budget * 2));
          return true;
        }
      }
      if (performance.now() >= deadline) {
        this.#spin = budget / 2;
        return false;
      }
    }
  }

  /**
   * True when the last TURN_MS passed without the event loop running (see TURN_MS): the caller
   * then yields with `await nextTurn()`. Synchronous, so the common case costs no extra tick.
   */
  #turnDue(): boolean {
    if ((++this.#ops & (TURN_CHECK_EVERY - 1)) !== 0) return false;
    const now = performance.now();
    if (now - this.#lastTurn < TURN_MS) return false;
    this.#lastTurn = now;
    return true;
  }

  async #wait(signal: AbortSignal | undefined): Promise<void> {
    await this.#hook.wait(signal);
    this.#lastTurn = performance.now();
  }

  #spinReadable(min: number): boolean {
    const ep = this.endpoint;
    return this.#spinUntil(() => ep.peekReadable() >= min);
  }

  #spinWritable(min: number): boolean {
    const ep = this.endpoint;
    return this.#spinUntil(() => ep.peekWritable() >= min);
  }

  /** Waits until at least `min` bytes can be read, or the peer closed. */
  async waitReadable(min = 1, signal?: AbortSignal): Promise<void> {
    const ep = this.endpoint;
    for (;;) {
      signal?.throwIfAborted();
      if (this.#spinReadable(min)) return;
      if (!ep.prepareWaitReadable(min)) return;
      await this.#wait(signal);
    }
  }

  /** Waits until at least `min` bytes can be written, or the peer closed. */
  async waitWritable(min = 1, signal?: AbortSignal): Promise<void> {
    const ep = this.endpoint;
    for (;;) {
      signal?.throwIfAborted();
      if (this.#spinWritable(min)) return;
      if (!ep.prepareWaitWritable(min)) return;
      await this.#wait(signal);
    }
  }

  /** Stream read: resolves with ≥ 1 byte read, or EOF (-1) once the peer closed and all was read. */
  async read(dst: Uint8Array, signal?: AbortSignal): Promise<number> {
    if (this.#turnDue()) await nextTurn();
    for (;;) {
      const n = this.endpoint.tryRead(dst);
      if (n !== 0 || dst.length === 0) return n;
      await this.waitReadable(1, signal);
    }
  }

  /** Packet receive: resolves with dst.length, or EOF if the peer closed first. */
  async recv(dst: Uint8Array, signal?: AbortSignal): Promise<number> {
    if (this.#turnDue()) await nextTurn();
    for (;;) {
      const n = this.endpoint.tryRecv(dst);
      if (n !== 0 || dst.length === 0) return n;
      await this.waitReadable(dst.length, signal);
    }
  }

  /** Stream write of all bytes; rejects with ClosedError if the peer closes first. */
  async write(src: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.#turnDue()) await nextTurn();
    let off = 0;
    while (off < src.length) {
      off += this.endpoint.tryWrite(src, off, src.length - off);
      if (off < src.length) await this.waitWritable(1, signal);
    }
  }

  /** Sends every chunk as a packet, in order, publishing once per batch that fits. */
  async sendBatch(chunks: readonly Uint8Array[], signal?: AbortSignal): Promise<void> {
    if (this.#turnDue()) await nextTurn();
    let i = 0;
    while (i < chunks.length) {
      const n = this.endpoint.trySendBatch(chunks, i);
      i += n;
      if (i < chunks.length && n === 0) await this.waitWritable(chunks[i]!.length, signal);
    }
  }

  /** Packet send, all-or-nothing; waits for room. */
  async send(src: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.#turnDue()) await nextTurn();
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
