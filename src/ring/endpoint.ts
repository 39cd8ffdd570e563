/**
 * One side of a vchan ring pair: the synchronous, non-blocking half of the
 * engine (docs/ring-protocol.md §4–§6). Everything in shared memory is
 * untrusted (ring-protocol.md §6): every peer value is read once, checked, and never
 * used as an offset; our own indices are private and only ever written.
 */
import { ClosedError, InvalidArgumentError, MessageTooLargeError, RingCorruptError } from '../errors.js';
import {
  HEADER_SIZE,
  MAGIC,
  NOTIFY_READ,
  NOTIFY_WRITE,
  OFF_C2S_CONS,
  OFF_C2S_OFFSET,
  OFF_C2S_ORDER,
  OFF_C2S_PROD,
  OFF_C2S_WRAPS,
  OFF_CLIENT_NOTIFY,
  OFF_CLIENT_STATE,
  OFF_HEADER_SIZE,
  OFF_MAGIC,
  OFF_S2C_CONS,
  OFF_S2C_OFFSET,
  OFF_S2C_ORDER,
  OFF_S2C_PROD,
  OFF_S2C_WRAPS,
  OFF_SERVER_NOTIFY,
  OFF_SERVER_STATE,
  OFF_VERSION,
  STATE_CLOSED,
  STATE_CONNECTED,
  STATE_WAITING,
  VERSION,
  checkOrder,
  regionLength,
  type RingGeometry,
  type Role,
} from './layout.js';

/** Returned by reads when the ring is empty and the peer has closed. */
export const EOF = -1;

/** What `peerState` reports, mirroring libvchan's is_open values. */
export type PeerState = 'waiting' | 'connected' | 'closed';

/** copy(dst, dstOffset, src, srcOffset, length), for large copies (see `bulkCopy`). */
export type CopyFn = (dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, length: number) => void;

export interface EndpointSetup extends RingGeometry {
  role: Role;
  /**
   * Copy used for payloads of BULK_COPY_MIN bytes and more. TypedArray#set ends in
   * glibc's memcpy, whose `rep movsb` path is ~13× slower on AMD Zen when source and
   * destination are close modulo 4 KiB — and ring data is page aligned (native/src/copy.c).
   * The client passes the addon's copy; pure-JS users (tests) keep TypedArray#set.
   */
  bulkCopy?: CopyFn;
}

/** Below this, a native call costs more than the copy it would speed up. */
export const BULK_COPY_MIN = 2048;

/** Private indices to start from (§9 conformance vectors); a fresh region starts at 0. */
export interface PrivateIndices {
  readCons: number;
  writeProd: number;
}

export class RingEndpoint {
  readonly role: Role;
  /** Bytes in the ring this side reads. */
  readonly readSize: number;
  /** Bytes in the ring this side writes. */
  readonly writeSize: number;

  readonly #ctl: Int32Array;
  readonly #rx: Uint8Array;
  readonly #tx: Uint8Array;
  readonly #rxMask: number;
  readonly #txMask: number;
  // Int32Array indices of the shared fields, chosen by role.
  readonly #iPeerProd: number; // producer index of the ring we read
  readonly #iMyCons: number; // consumer index of the ring we read
  readonly #iMyProd: number; // producer index of the ring we write
  readonly #iPeerCons: number; // consumer index of the ring we write
  readonly #iMyState: number;
  readonly #iPeerState: number;
  readonly #iMyWraps: number;
  readonly #iMyNotify: number; // word we consult before kicking
  readonly #iPeerNotify: number; // word the peer consults: where we ask for kicks
  readonly #peerMaxState: number;
  readonly #kick: () => void;
  readonly #bulkCopy: CopyFn | undefined;

  // Private copies (§4): never read back from shared memory.
  #cons = 0;
  #prod = 0;
  #wraps = 0;
  #peerClosed = false;
  #closed = false;
  #corrupt: string | null = null;
  /** Bytes moved since setup, for statistics (may exceed 2^32). */
  bytesRead = 0;
  bytesWritten = 0;

  /**
   * @param buffer  mapping that contains the region
   * @param byteOffset  start of the region in `buffer` (4-byte aligned)
   * @param setup  the private setup received from the daemon (§3) — the only source of sizes
   * @param kick  signals the peer (eventfd write / doorbell)
   * @param initial  private indices to start from; the allocator zero-fills, so 0 by default
   */
  constructor(
    buffer: ArrayBuffer,
    byteOffset: number,
    setup: EndpointSetup,
    kick: () => void,
    initial: PrivateIndices = { readCons: 0, writeProd: 0 },
  ) {
    checkOrder(setup.c2sOrder, 'c2s');
    checkOrder(setup.s2cOrder, 's2c');
    if (byteOffset % 8 !== 0) throw new InvalidArgumentError('region offset must be 8-byte aligned');
    const len = regionLength(setup);
    if (byteOffset < 0 || byteOffset + len > buffer.byteLength) {
      throw new InvalidArgumentError(`region [${byteOffset}, +${len}) exceeds mapping of ${buffer.byteLength} bytes`);
    }
    this.role = setup.role;
    this.#kick = kick;
    this.#bulkCopy = setup.bulkCopy;
    this.#ctl = new Int32Array(buffer, byteOffset, HEADER_SIZE / 4);
    const c2sSize = 2 ** setup.c2sOrder;
    const s2cSize = 2 ** setup.s2cOrder;
    const c2s = new Uint8Array(buffer, byteOffset + HEADER_SIZE, c2sSize);
    const s2c = new Uint8Array(buffer, byteOffset + HEADER_SIZE + c2sSize, s2cSize);
    const server = setup.role === 'server';
    this.#rx = server ? c2s : s2c;
    this.#tx = server ? s2c : c2s;
    this.readSize = this.#rx.length;
    this.writeSize = this.#tx.length;
    this.#rxMask = this.readSize - 1;
    this.#txMask = this.writeSize - 1;
    this.#iPeerProd = (server ? OFF_C2S_PROD : OFF_S2C_PROD) / 4;
    this.#iMyCons = (server ? OFF_C2S_CONS : OFF_S2C_CONS) / 4;
    this.#iMyProd = (server ? OFF_S2C_PROD : OFF_C2S_PROD) / 4;
    this.#iPeerCons = (server ? OFF_S2C_CONS : OFF_C2S_CONS) / 4;
    this.#iMyState = (server ? OFF_SERVER_STATE : OFF_CLIENT_STATE) / 4;
    this.#iPeerState = (server ? OFF_CLIENT_STATE : OFF_SERVER_STATE) / 4;
    this.#iMyWraps = (server ? OFF_S2C_WRAPS : OFF_C2S_WRAPS) / 4;
    this.#iMyNotify = (server ? OFF_SERVER_NOTIFY : OFF_CLIENT_NOTIFY) / 4;
    this.#iPeerNotify = (server ? OFF_CLIENT_NOTIFY : OFF_SERVER_NOTIFY) / 4;
    this.#peerMaxState = server ? STATE_WAITING : STATE_CONNECTED;
    this.#checkHeader(buffer, byteOffset, setup);
    // Our own indices are private from the start (§4): never taken from shared memory.
    this.#cons = initial.readCons | 0;
    this.#prod = initial.writeProd | 0;
  }

  #checkHeader(buffer: ArrayBuffer, byteOffset: number, g: RingGeometry): void {
    // Header fields are read once, here, and compared with the private setup (§3 step 2).
    const dv = new DataView(buffer, byteOffset, HEADER_SIZE);
    const problems: string[] = [];
    if (dv.getUint32(OFF_MAGIC, true) !== MAGIC) problems.push('magic');
    if (dv.getUint16(OFF_VERSION, true) !== VERSION) problems.push('version');
    if (dv.getUint16(OFF_HEADER_SIZE, true) !== HEADER_SIZE) problems.push('header_size');
    if (dv.getUint8(OFF_C2S_ORDER) !== g.c2sOrder) problems.push('c2s_order');
    if (dv.getUint8(OFF_S2C_ORDER) !== g.s2cOrder) problems.push('s2c_order');
    if (dv.getUint32(OFF_C2S_OFFSET, true) !== HEADER_SIZE) problems.push('c2s_offset');
    if (dv.getUint32(OFF_S2C_OFFSET, true) !== HEADER_SIZE + 2 ** g.c2sOrder) problems.push('s2c_offset');
    if (problems.length > 0) this.#fail(`header does not match setup (${problems.join(', ')})`);
  }

  #fail(why: string): never {
    this.#corrupt ??= why;
    throw new RingCorruptError(`ring corrupted by peer: ${this.#corrupt}`);
  }

  #checkUsable(): void {
    if (this.#corrupt !== null) this.#fail(this.#corrupt);
    if (this.#closed) throw new ClosedError('vchan closed locally');
  }

  /** Reads and validates the peer's state (§2.1); latches CLOSED. */
  #loadPeerState(): number {
    if (this.#peerClosed) return STATE_CLOSED;
    const s = Atomics.load(this.#ctl, this.#iPeerState);
    if (s < 0 || s > this.#peerMaxState) this.#fail(`peer state ${s >>> 0} invalid`);
    if (s === STATE_CLOSED) this.#peerClosed = true;
    return s;
  }

  /** Bytes available to read; throws on corruption. One acquire load of the peer index. */
  #avail(): number {
    const avail = (Atomics.load(this.#ctl, this.#iPeerProd) - this.#cons) >>> 0;
    if (avail > this.readSize) this.#fail(`producer index ahead of consumer by ${avail} > ${this.readSize}`);
    return avail;
  }

  /** Bytes free to write; throws on corruption. */
  #free(): number {
    const used = (this.#prod - Atomics.load(this.#ctl, this.#iPeerCons)) >>> 0;
    if (used > this.writeSize) this.#fail(`consumer index behind producer by ${used} > ${this.writeSize}`);
    return this.writeSize - used;
  }

  #copyOut(dst: Uint8Array, dstOff: number, k: number): void {
    const rx = this.#rx;
    const pos = this.#cons & this.#rxMask;
    const first = Math.min(k, rx.length - pos);
    const bulk = this.#bulkCopy;
    if (bulk !== undefined && k >= BULK_COPY_MIN) {
      bulk(dst, dstOff, rx, pos, first);
      if (first < k) bulk(dst, dstOff + first, rx, 0, k - first);
      return;
    }
    dst.set(rx.subarray(pos, pos + first), dstOff);
    if (first < k) dst.set(rx.subarray(0, k - first), dstOff + first);
  }

  #copyIn(src: Uint8Array, srcOff: number, k: number): void {
    const tx = this.#tx;
    const pos = this.#prod & this.#txMask;
    const bulk = this.#bulkCopy;
    if (bulk !== undefined && k >= BULK_COPY_MIN) {
      const first = Math.min(k, tx.length - pos);
      bulk(tx, pos, src, srcOff, first);
      if (first < k) bulk(tx, 0, src, srcOff + first, k - first);
      return;
    }
    // Fast path: the whole source, no wrap — TypedArray#set without creating a view
    // (a subarray costs ~100 ns, more than copying 64 bytes; measured, see bench/).
    if (srcOff === 0 && k === src.length && pos + k <= tx.length) {
      tx.set(src, pos);
      return;
    }
    const first = Math.min(k, tx.length - pos);
    tx.set(src.subarray(srcOff, srcOff + first), pos);
    if (first < k) tx.set(src.subarray(srcOff + first, srcOff + k), 0);
  }

  /** §4 step 4–5 for a reader: publish the consumer index, then answer a READ request. */
  #consumed(k: number): void {
    this.#cons = (this.#cons + k) | 0;
    this.bytesRead += k;
    Atomics.store(this.#ctl, this.#iMyCons, this.#cons);
    this.#answer(NOTIFY_READ);
  }

  #produced(k: number): void {
    const next = (this.#prod + k) | 0;
    if (next >>> 0 < this.#prod >>> 0) {
      this.#wraps = (this.#wraps + 1) >>> 0;
      Atomics.store(this.#ctl, this.#iMyWraps, this.#wraps | 0);
    }
    this.#prod = next;
    this.bytesWritten += k;
    Atomics.store(this.#ctl, this.#iMyProd, next);
    this.#answer(NOTIFY_WRITE);
  }

  /** §5.2: the seq_cst store above is the fence; kick only if the peer asked. */
  #answer(bit: number): void {
    if ((Atomics.load(this.#ctl, this.#iMyNotify) & bit) === 0) return;
    if ((Atomics.and(this.#ctl, this.#iMyNotify, ~bit) & bit) !== 0) this.#kick();
  }

  /**
   * Stream read: copies up to `length` bytes into `dst` at `offset`.
   * @returns bytes read (0: nothing yet), or EOF (-1) once the peer closed and the ring is drained.
   */
  tryRead(dst: Uint8Array, offset = 0, length = dst.length - offset): number {
    this.#checkUsable();
    // State before index (§6): data written before a close is seen after it.
    const state = this.#loadPeerState();
    const avail = this.#avail();
    if (avail === 0) return state === STATE_CLOSED ? EOF : 0;
    const k = Math.min(avail, length);
    if (k === 0) return 0;
    this.#copyOut(dst, offset, k);
    this.#consumed(k);
    return k;
  }

  /**
   * Packet receive: exactly `length` bytes or nothing.
   * @returns `length`, 0 if not enough data yet, or EOF if the peer closed with fewer bytes left.
   */
  tryRecv(dst: Uint8Array, offset = 0, length = dst.length - offset): number {
    this.#checkUsable();
    if (length > this.readSize) throw new MessageTooLargeError(length, this.readSize);
    const state = this.#loadPeerState();
    const avail = this.#avail();
    if (avail < length || length === 0) {
      return state === STATE_CLOSED && avail < length ? EOF : 0;
    }
    this.#copyOut(dst, offset, length);
    this.#consumed(length);
    return length;
  }

  /**
   * Stream write: copies as much of `src[offset, offset+length)` as fits.
   * @returns bytes written (possibly 0). Throws ClosedError if the peer closed.
   */
  tryWrite(src: Uint8Array, offset = 0, length = src.length - offset): number {
    this.#checkUsable();
    if (this.#loadPeerState() === STATE_CLOSED) throw new ClosedError();
    const k = Math.min(this.#free(), length);
    if (k === 0) return 0;
    this.#copyIn(src, offset, k);
    this.#produced(k);
    return k;
  }

  /**
   * Batched packet send: writes whole chunks from `chunks[start]` on, in order,
   * as many as fit, and publishes the producer index once (ring-protocol.md §4
   * allows any grouping of copies before a publish). For many small messages
   * this saves the per-call index and notify traffic.
   * @returns the number of chunks written (0 if the first does not fit yet).
   */
  trySendBatch(chunks: readonly Uint8Array[], start = 0): number {
    this.#checkUsable();
    if (this.#loadPeerState() === STATE_CLOSED) throw new ClosedError();
    let free = this.#free();
    let n = 0;
    let bytes = 0;
    const prod0 = this.#prod;
    for (let i = start; i < chunks.length; i++) {
      const c = chunks[i]!;
      if (c.length > this.writeSize) {
        if (n === 0) throw new MessageTooLargeError(c.length, this.writeSize);
        break;
      }
      if (c.length > free) break;
      this.#copyIn(c, 0, c.length);
      this.#prod = (this.#prod + c.length) | 0;
      free -= c.length;
      bytes += c.length;
      n++;
    }
    if (bytes > 0) {
      this.#prod = prod0;
      this.#produced(bytes);
    }
    return n;
  }

  /** Packet send: all `length` bytes or nothing. @returns `length` or 0. */
  trySend(src: Uint8Array, offset = 0, length = src.length - offset): number {
    this.#checkUsable();
    if (this.#loadPeerState() === STATE_CLOSED) throw new ClosedError();
    if (length > this.writeSize) throw new MessageTooLargeError(length, this.writeSize);
    if (length === 0 || this.#free() < length) return 0;
    this.#copyIn(src, offset, length);
    this.#produced(length);
    return length;
  }

  /** Bytes readable now, without arming a notification (used by spinners). */
  peekReadable(): number {
    this.#checkUsable();
    return this.#avail();
  }

  /** Bytes writable now, without arming a notification. */
  peekWritable(): number {
    this.#checkUsable();
    return this.#free();
  }

  /** libvchan data_ready(): arms "kick me on write", then counts (§5.1). */
  dataReady(): number {
    this.#checkUsable();
    Atomics.or(this.#ctl, this.#iPeerNotify, NOTIFY_WRITE);
    return this.#avail();
  }

  /** libvchan buffer_space(): arms "kick me on read", then counts (§5.1). */
  bufferSpace(): number {
    this.#checkUsable();
    Atomics.or(this.#ctl, this.#iPeerNotify, NOTIFY_READ);
    return this.#free();
  }

  /**
   * §5.1 before sleeping for data: request a kick, fence, re-check.
   * @returns true if the caller should sleep; false if data arrived or the peer closed.
   */
  prepareWaitReadable(min = 1): boolean {
    this.#checkUsable();
    Atomics.or(this.#ctl, this.#iPeerNotify, NOTIFY_WRITE); // seq_cst RMW = full fence
    const state = this.#loadPeerState();
    return this.#avail() < min && state !== STATE_CLOSED;
  }

  /** §5.1 before sleeping for space. @returns true if the caller should sleep. */
  prepareWaitWritable(min = 1): boolean {
    this.#checkUsable();
    Atomics.or(this.#ctl, this.#iPeerNotify, NOTIFY_READ);
    const state = this.#loadPeerState();
    return this.#free() < Math.min(min, this.writeSize) && state !== STATE_CLOSED;
  }

  /** The peer's state as seen in shared memory (libvchan is_open), without a daemon round trip. */
  get peerState(): PeerState {
    if (this.#corrupt !== null) return 'closed';
    try {
      const s = this.#loadPeerState();
      return s === STATE_CLOSED ? 'closed' : s === STATE_WAITING ? 'waiting' : 'connected';
    } catch {
      return 'closed';
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  get corrupt(): boolean {
    return this.#corrupt !== null;
  }

  /** Client setup step (§3): mark attached, ask for the server's writes, kick once. */
  attach(): void {
    if (this.role !== 'client') throw new InvalidArgumentError('only a client attaches');
    this.#checkUsable();
    Atomics.store(this.#ctl, this.#iMyState, STATE_CONNECTED);
    Atomics.or(this.#ctl, this.#iPeerNotify, NOTIFY_WRITE);
    this.#kick();
  }

  /** §5.3: mark closed and kick unconditionally. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    Atomics.store(this.#ctl, this.#iMyState, STATE_CLOSED);
    this.#kick();
  }
}
