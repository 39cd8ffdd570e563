/**
 * The TypeScript vchan API (docs/api.md): an idiomatic face on the ring
 * engine. The daemon only sets a vchan up; every byte moves through shared
 * memory (architecture.md rule 1).
 */
import { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import { native } from '../native.js';
import { RingEndpoint, EOF, type PeerState } from '../ring/endpoint.js';
import { AsyncRing } from '../ring/async-ring.js';
import { EventFdWaiter } from '../ring/eventfd-waiter.js';
import { AbortError, ClosedError, DaemonUnavailableError, InvalidArgumentError, KvmchanError, TimeoutError } from '../errors.js';
import type { VchanSetup } from './setup.js';

export { EOF };

export type VchanState = 'waiting' | 'connected' | 'closed';

/**
 * The events a Vchan emits (docs/api.md): listeners are type-checked, so a misspelt event
 * name or a wrong listener signature does not compile.
 */
export interface VchanEvents {
  /** Emitted once, by close() (ours), after everything was released. */
  close: [];
  /** The daemon connection was lost; only emitted when someone listens. */
  error: [err: KvmchanError];
}

export interface IoOptions {
  signal?: AbortSignal;
}

export interface VchanOptions {
  /** Longest spin before sleeping, in µs (ring-protocol.md §8); 0 disables spinning. Default 100. */
  spin?: number;
}

const DEFAULT_READ = 64 * 1024;

/** A vchan endpoint. Create with `Vchan.listen()` / `Vchan.connect()` (see ./connect.ts). */
export class Vchan extends EventEmitter<VchanEvents> implements AsyncDisposable {
  readonly role: 'server' | 'client';
  readonly handle: number;
  readonly port: number;
  readonly localDomain: number;
  readonly peerDomain: number;
  readonly #endpoint: RingEndpoint;
  readonly #ring: AsyncRing;
  readonly #waiter: EventFdWaiter;
  readonly #setup: VchanSetup;
  #mapping: ArrayBuffer | null;
  #lost: KvmchanError | null = null;
  #closed = false;
  #stream: Duplex | null = null;

  /** @internal use Vchan.listen / Vchan.connect */
  constructor(setup: VchanSetup, options: VchanOptions = {}) {
    super();
    const { info, fds } = setup;
    this.#setup = setup;
    this.role = info.role;
    this.handle = info.handle;
    this.port = info.port;
    this.localDomain = info.localDomain;
    this.peerDomain = info.peerDomain;
    // Map only this vchan's range (docs/security.md): offset and length come from
    // the daemon (trusted), and the fd can be closed once mapped.
    let mapping: ArrayBuffer | null = null;
    let waiter: EventFdWaiter | null = null;
    try {
      mapping = native.mmap(fds.shm, info.shmLength, info.shmOffset, true);
      native.close(fds.shm);
      waiter = new EventFdWaiter(fds.wait, fds.kick);
      const geometry =
        info.role === 'server'
          ? { c2sOrder: info.readOrder, s2cOrder: info.writeOrder }
          : { c2sOrder: info.writeOrder, s2cOrder: info.readOrder };
      this.#endpoint = new RingEndpoint(mapping, 0, { role: info.role, ...geometry, bulkCopy: native.copyBytes }, waiter.kick);
    } catch (err) {
      if (mapping !== null) native.munmap(mapping);
      else native.close(fds.shm);
      if (waiter !== null) waiter.close();
      else {
        native.close(fds.wait);
        native.close(fds.kick);
      }
      setup.session.close();
      throw err;
    }
    this.#mapping = mapping;
    this.#waiter = waiter;
    this.#ring = new AsyncRing(this.#endpoint, waiter, options.spin === undefined ? {} : { spin: options.spin });
    if (info.role === 'client') this.#endpoint.attach();
    setup.session.onLost((err) => {
      this.#onDaemonLost(err);
    });
    // The daemon's word that the peer is gone (it stored its state CLOSED first): every wait
    // re-checks the ring, drains, then sees end of stream (wire-protocol.md §7.3).
    setup.session.onPeerClosed(info.handle, () => {
      waiter.wake();
    });
  }

  #onDaemonLost(err: KvmchanError): void {
    if (this.#closed) return;
    // Without the daemon nobody would tell us the peer died: fail loudly instead of hanging.
    this.#lost = new DaemonUnavailableError(`kvmchand connection lost: ${err.message}`, { cause: err });
    this.#endpoint.close();
    this.#waiter.close();
    // Pending and later operations reject with the error; 'error' is only emitted to listeners,
    // so a process that does not listen is not crashed by it.
    if (this.listenerCount('error') > 0) this.emit('error', this.#lost);
  }

  #check(): void {
    if (this.#lost !== null) throw this.#lost;
    if (this.#closed) throw new ClosedError('vchan closed locally');
  }

  /**
   * When the daemon dies, each endpoint's library closes its side (#onDaemonLost), so the
   * survivor may see the peer's CLOSED in shared memory before its own daemon socket reports
   * the loss (the dying daemon's sockets are released milliseconds apart) — and would take a
   * stream cut short by the crash for a normal end of stream. So before reporting end of
   * stream or a closed peer, make sure the daemon is still there: synchronously (what the
   * socket already says) in the non-blocking calls, with a GET_VERSION round trip in the
   * awaitable ones (a dead daemon never answers; once per vchan, at its end).
   */
  #probeDaemon(): void {
    if (this.#lost === null && !this.#closed) this.#setup.session.probe();
    if (this.#lost !== null) throw this.#lost;
  }

  async #confirmDaemon(): Promise<void> {
    if (this.#lost === null && !this.#closed) {
      try {
        await this.#setup.session.ping();
      } catch {
        // A lost daemon connection sets #lost through onLost; anything else changes nothing.
      }
    }
    if (this.#lost !== null) throw this.#lost;
  }

  #eofCheck(n: number): number {
    if (n === EOF) this.#probeDaemon();
    return n;
  }

  async #guard<T>(op: () => Promise<T>): Promise<T> {
    this.#check();
    let result: T;
    try {
      result = await op();
    } catch (err) {
      if (err instanceof ClosedError) await this.#confirmDaemon();
      if (this.#lost !== null) throw this.#lost;
      // The ring engine checks an already aborted signal with throwIfAborted(), a DOMException
      // without a kvmchan code; callers get the same AbortError however early they aborted.
      if (err instanceof DOMException && err.name === 'AbortError') throw new AbortError(undefined, { cause: err });
      throw err;
    }
    if (result === EOF) await this.#confirmDaemon();
    return result;
  }

  /** Size of the ring this side reads. */
  get readSize(): number {
    return this.#endpoint.readSize;
  }

  /** Size of the ring this side writes. */
  get writeSize(): number {
    return this.#endpoint.writeSize;
  }

  /** From shared memory, no daemon round trip (libvchan is_open). */
  get state(): VchanState {
    if (this.#closed || this.#lost !== null) return 'closed';
    const s: PeerState = this.#endpoint.peerState;
    return s;
  }

  /** Bytes readable now; arms a wake-up for the next write (libvchan data_ready). */
  dataReady(): number {
    this.#check();
    return this.#endpoint.dataReady();
  }

  /** Bytes writable now; arms a wake-up for the next read (libvchan buffer_space). */
  bufferSpace(): number {
    this.#check();
    return this.#endpoint.bufferSpace();
  }

  /** Non-blocking stream read into `dst`: bytes read, 0 if none yet, EOF (-1) at end of stream. */
  tryRead(dst: Uint8Array): number {
    this.#check();
    return this.#eofCheck(this.#endpoint.tryRead(dst));
  }

  /** Non-blocking stream write: bytes written (maybe 0). */
  tryWrite(src: Uint8Array): number {
    this.#check();
    try {
      return this.#endpoint.tryWrite(src);
    } catch (err) {
      if (err instanceof ClosedError) this.#probeDaemon();
      throw err;
    }
  }

  /** Non-blocking packet send: true if sent whole, false if it does not fit yet. */
  trySend(src: Uint8Array): boolean {
    this.#check();
    try {
      return this.#endpoint.trySend(src) === src.length && src.length > 0;
    } catch (err) {
      if (err instanceof ClosedError) this.#probeDaemon();
      throw err;
    }
  }

  /** Non-blocking packet receive of exactly dst.length bytes: dst.length, 0 if not yet, EOF. */
  tryRecv(dst: Uint8Array): number {
    this.#check();
    return this.#eofCheck(this.#endpoint.tryRecv(dst));
  }

  /** Stream read of up to `max` bytes; null at end of stream. */
  async read(max = DEFAULT_READ, options: IoOptions = {}): Promise<Buffer | null> {
    const buf = Buffer.allocUnsafe(Math.min(max, this.readSize));
    const n = await this.readInto(buf, options);
    return n === EOF ? null : buf.subarray(0, n);
  }

  /** Stream read into `dst`: bytes read (≥ 1), or EOF (-1) at end of stream. */
  readInto(dst: Uint8Array, options: IoOptions = {}): Promise<number> {
    return this.#guard(() => this.#ring.read(dst, options.signal));
  }

  /** Writes all of `data`, waiting for room as needed. Rejects with ClosedError if the peer goes. */
  write(data: Uint8Array, options: IoOptions = {}): Promise<void> {
    return this.#guard(() => this.#ring.write(data, options.signal));
  }

  /** Packet send: all of `data` at once (≤ writeSize, else MessageTooLargeError). */
  send(data: Uint8Array, options: IoOptions = {}): Promise<void> {
    return this.#guard(() => this.#ring.send(data, options.signal));
  }

  /**
   * Sends each chunk as a packet, in order; chunks that fit together are
   * published at once (one index update, at most one kick), which is how small
   * messages reach millions per second.
   */
  sendBatch(chunks: readonly Uint8Array[], options: IoOptions = {}): Promise<void> {
    return this.#guard(() => this.#ring.sendBatch(chunks, options.signal));
  }

  /** Non-blocking sendBatch: the number of leading chunks sent. */
  trySendBatch(chunks: readonly Uint8Array[]): number {
    this.#check();
    return this.#endpoint.trySendBatch(chunks);
  }

  /** Packet receive of exactly `size` bytes; null if the peer closed first. */
  async recv(size: number, options: IoOptions = {}): Promise<Buffer | null> {
    if (!Number.isSafeInteger(size) || size < 0) throw new InvalidArgumentError(`invalid packet size ${size}`);
    const buf = Buffer.allocUnsafe(size);
    const n = await this.recvInto(buf, options);
    return n === EOF ? null : buf;
  }

  recvInto(dst: Uint8Array, options: IoOptions = {}): Promise<number> {
    return this.#guard(() => this.#ring.recv(dst, options.signal));
  }

  /** Resolves when readable (≥ min bytes) or the peer closed. */
  waitReadable(min = 1, options: IoOptions = {}): Promise<void> {
    return this.#guard(() => this.#ring.waitReadable(min, options.signal));
  }

  /** Resolves when writable (≥ min bytes free) or the peer closed. */
  waitWritable(min = 1, options: IoOptions = {}): Promise<void> {
    return this.#guard(() => this.#ring.waitWritable(min, options.signal));
  }

  /**
   * Server: resolves once the vchan is no longer waiting for its client — the
   * client attached, or attached and already closed (check `state`; reads still
   * drain what it sent). As Qubes' `while (is_open() == VCHAN_WAITING) wait();`.
   */
  async waitConnected(options: IoOptions & { timeout?: number } = {}): Promise<void> {
    const signals: AbortSignal[] = [];
    if (options.signal !== undefined) signals.push(options.signal);
    if (options.timeout !== undefined) signals.push(AbortSignal.timeout(options.timeout));
    const signal = signals.length > 0 ? AbortSignal.any(signals) : undefined;
    await this.#guard(async () => {
      for (;;) {
        if (this.#endpoint.peerState !== 'waiting') return;
        // The client's attach kicks us unconditionally (ring-protocol.md §3).
        try {
          await this.#waiter.wait(signal);
        } catch (err) {
          if (options.timeout !== undefined && signal?.aborted === true && options.signal?.aborted !== true) {
            throw new TimeoutError(`no client connected within ${options.timeout} ms`);
          }
          throw err;
        }
      }
    });
  }

  /** Async iteration yields chunks until end of stream. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    for (;;) {
      const chunk = await this.read();
      if (chunk === null) return;
      yield chunk;
    }
  }

  /**
   * The Duplex over this vchan (the same one on every call), with backpressure: `write`
   * resolves when the bytes are in the ring, reads are pulled as the consumer asks.
   * vchans have no half-close (docs/api.md "Semantics"), so the stream ends as a whole:
   * - the peer closed: the readable side drains and emits 'end', then the stream is
   *   destroyed without error ('close') and the vchan closed;
   * - we closed (close() or destroy()): the stream is destroyed quietly, no 'error';
   * - ending the writable side (end()) closes the vchan once both sides are done;
   * - a write the peer can no longer receive (it closed first) or a lost daemon is an 'error'.
   */
  stream(): Duplex {
    if (this.#stream !== null) return this.#stream;
    const chunkSize = Math.min(DEFAULT_READ, this.readSize);
    let reading = false;
    const duplex: Duplex = new Duplex({
      read: () => {
        if (reading) return;
        reading = true;
        const pump = async (): Promise<void> => {
          try {
            for (;;) {
              // A fresh buffer per chunk, read into directly: the stream keeps it, no second copy.
              const chunk = Buffer.allocUnsafe(chunkSize);
              const n = await this.readInto(chunk);
              if (n === EOF) {
                duplex.push(null);
                return;
              }
              if (!duplex.push(chunk.subarray(0, n))) return;
            }
          } finally {
            reading = false;
          }
        };
        pump().catch((err: unknown) => {
          this.#streamFailed(duplex, err);
        });
      },
      write: (chunk: Buffer, _enc, cb) => {
        this.write(chunk).then(
          () => {
            cb();
          },
          (err: unknown) => {
            // Our own close() already destroyed the stream quietly; nothing to report.
            if (this.#closed && this.#lost === null) cb();
            else cb(err as Error);
          },
        );
      },
      final: (cb) => {
        // Half-close is not in the vchan contract: the write side ends with the vchan.
        cb();
      },
      destroy: (err, cb) => {
        this.close();
        cb(err);
      },
    });
    duplex.on('end', () => {
      // The peer closed and everything it sent was consumed: nothing can move any more.
      duplex.destroy();
    });
    duplex.on('finish', () => {
      if (duplex.readableEnded) this.close();
    });
    this.#stream = duplex;
    return duplex;
  }

  #streamFailed(duplex: Duplex, err: unknown): void {
    if (this.#closed && this.#lost === null) duplex.destroy();
    else duplex.destroy(err as Error);
  }

  /** Keep the process alive while idle (e.g. a server awaiting its client). */
  ref(): this {
    this.#waiter.keepAlive = true;
    return this;
  }

  unref(): this {
    this.#waiter.keepAlive = false;
    return this;
  }

  /** Statistics kept by this side. */
  get bytesRead(): number {
    return this.#endpoint.bytesRead;
  }

  get bytesWritten(): number {
    return this.#endpoint.bytesWritten;
  }

  /** Close: marks our side closed in shared memory, kicks the peer, releases everything. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#lost === null) {
      this.#endpoint.close();
      this.#waiter.close();
    }
    if (this.#mapping !== null) {
      native.munmap(this.#mapping);
      this.#mapping = null;
    }
    this.#setup.session.close();
    // A local close ends the stream quietly: its pending reads and writes fail with
    // ClosedError('vchan closed locally'), which is no news to the one who closed.
    if (this.#stream !== null && !this.#stream.destroyed) this.#stream.destroy();
    this.emit('close');
  }

  /** `await using v = await Vchan.connect(…)`: closes the vchan at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}
