/**
 * A Device that connects to an ivshmem server socket exactly as QEMU's
 * ivshmem-doorbell does (docs/ivshmem.md §1, §4): the basis of simulated guests (docs/pools.md §7,
 * docs/testing.md tier 2). Ringing a peer = writing that peer's eventfd for the vector; our interrupts =
 * our own eventfds.
 *
 * The server is untrusted (docs/ivshmem.md §5). Every message is checked as QEMU checks it,
 * and more strictly where QEMU only logs: wrong version, bad id, values outside -1..65535,
 * two fds on one message, a second shm fd, more eventfds than `vectors` for a peer, more
 * peers than `maxPeers`, an shm fd that is not a regular file / memfd of a power-of-two size
 * ≥ 4096, an "eventfd" that is not an eventfd. Any of these closes the connection (QEMU
 * would carry on; for our own simulated guests a loud failure is worth more).
 * Reads never take more than the rest of the current 8-byte message, so an fd can always be
 * attributed to its message (docs/ivshmem.md §1).
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { AbortError, ClosedError, InvalidArgumentError, ProtocolError, TimeoutError, fromSystemError } from '../errors.js';
import { native, READABLE, DISCONNECT, type Poller } from '../native.js';
import {
  MAX_VECTORS,
  MESSAGE_SIZE,
  MIN_SHM_SIZE,
  MAX_SHM_SIZE,
  PROTOCOL_VERSION,
  SHM_MESSAGE,
  checkVectors,
  decodeMessage,
  isPowerOfTwo,
} from './protocol.js';
import type { DeviceEvents, Device, DeviceShm } from './device.js';
import { MappingSet } from './mappings.js';
import { isEventfd, regularFileSize } from './fd-check.js';

export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
export const DEFAULT_MAX_PEERS = 256;

export interface SocketDeviceOptions {
  /** Like QEMU's `vectors` property: our own vector count, and the most eventfds accepted
   *  for any peer. connect() resolves once all of our own have arrived. Default 1. */
  vectors?: number;
  /** Most distinct peers accepted from the server (each costs `vectors` fds). Default 256. */
  maxPeers?: number;
  /** connect() fails with TimeoutError if setup is not complete by then. Default 5000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
  log?: Logger;
}

type Phase = 'version' | 'id' | 'body';

const PROTOCOL_CODE = 'KVMCHAN_E_IVSHMEM_PROTOCOL';

export class SocketDevice extends EventEmitter<DeviceEvents> implements Device {
  readonly socketPath: string;
  readonly vectors: number;
  readonly maxPeers: number;

  #fd: number;
  readonly #poller: Poller;
  readonly #log: Logger | undefined;
  #phase: Phase = 'version';
  readonly #msg = Buffer.alloc(MESSAGE_SIZE);
  #msgLen = 0;
  #msgFd = -1;
  #id = -1;
  #shm: DeviceShm | null = null;
  #maps: MappingSet | null = null;
  readonly #own: number[] = [];
  /** Other peers' eventfds, index = vector. */
  readonly #peers = new Map<number, number[]>();
  /** Peers that gained eventfds in the current read burst and are not announced yet. */
  readonly #pendingJoins = new Set<number>();
  readonly #announced = new Set<number>();
  #ready = false;
  #closed = false;
  #settle: ((err: Error | null) => void) | null = null;

  private constructor(socketPath: string, fd: number, vectors: number, maxPeers: number, log: Logger | undefined) {
    super();
    this.socketPath = socketPath;
    this.vectors = vectors;
    this.maxPeers = maxPeers;
    this.#fd = fd;
    this.#log = log;
    this.#poller = new native.Poller(fd, (err) => {
      this.#onReadable(err);
    });
  }

  /** Connect to an ivshmem server and complete the setup phase. */
  static async connect(socketPath: string, opts: SocketDeviceOptions = {}): Promise<SocketDevice> {
    const vectors = opts.vectors ?? 1;
    checkVectors(vectors, MAX_VECTORS);
    const maxPeers = opts.maxPeers ?? DEFAULT_MAX_PEERS;
    if (!Number.isInteger(maxPeers) || maxPeers < 1 || maxPeers > 65536) {
      throw new InvalidArgumentError(`maxPeers must be in [1, 65536], got ${maxPeers}`);
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    opts.signal?.throwIfAborted();
    let fd: number;
    try {
      fd = native.connectUnix(socketPath, 'stream');
    } catch (err) {
      throw fromSystemError(err, `ivshmem: cannot connect to ${socketPath}`);
    }
    let dev: SocketDevice;
    try {
      dev = new SocketDevice(socketPath, fd, vectors, maxPeers, opts.log?.child({ component: 'ivshmem-client', socket: socketPath }));
    } catch (err) {
      native.close(fd);
      throw err;
    }
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        dev.#settleSetup(new TimeoutError(`ivshmem: setup from ${socketPath} not complete after ${timeoutMs} ms`));
      }, timeoutMs);
      const onAbort = (): void => {
        dev.#settleSetup(new AbortError('ivshmem connect aborted', { cause: opts.signal?.reason }));
      };
      dev.#settle = (err) => {
        dev.#settle = null;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (err === null) {
          resolve();
        } else {
          dev.#teardown();
          reject(err);
        }
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      dev.#poller.start(READABLE | DISCONNECT);
      // Data may already be there; the poller reports it on the next loop turn anyway.
    });
    // Idle devices must not keep the process alive (a simulated guest holds other handles).
    dev.#poller.unref();
    return dev;
  }

  get ivPosition(): number {
    return this.#id;
  }

  get shm(): DeviceShm {
    if (this.#shm === null) throw new ClosedError('ivshmem device not set up');
    return this.#shm;
  }

  get closed(): boolean {
    return this.#closed;
  }

  map(offset?: number, length?: number, writable?: boolean): ArrayBuffer {
    this.#checkOpen();
    return this.#maps!.map(offset, length, writable);
  }

  unmap(buffer: ArrayBuffer): void {
    if (this.#maps === null) throw new InvalidArgumentError('unmap: buffer was not mapped by this device');
    this.#maps.unmap(buffer);
  }

  interruptFd(vector: number): number {
    this.#checkOpen();
    const fd = Number.isInteger(vector) ? this.#own[vector] : undefined;
    if (fd === undefined) throw new InvalidArgumentError(`interruptFd: vector ${vector} not in [0, ${this.#own.length})`);
    return fd;
  }

  doorbellFd(peerId: number, vector: number): number | null {
    if (this.#closed) return null;
    return this.#peers.get(peerId)?.[vector] ?? null;
  }

  doorbell(peerId: number, vector: number): void {
    const fd = this.doorbellFd(peerId, vector);
    if (fd !== null) native.eventfdWrite(fd, 1);
  }

  peers(): number[] {
    return [...this.#announced].sort((a, b) => a - b);
  }

  peerVectors(peerId: number): number {
    return this.#announced.has(peerId) ? (this.#peers.get(peerId)?.length ?? 0) : 0;
  }

  ref(): this {
    if (!this.#closed) this.#poller.ref();
    return this;
  }

  unref(): this {
    if (!this.#closed) this.#poller.unref();
    return this;
  }

  close(): void {
    if (this.#closed) return;
    this.#teardown();
    this.emit('close', null);
  }

  // --- receiving -------------------------------------------------------------------------

  #onReadable(err: Error | null): void {
    if (this.#closed) return;
    if (err !== null) {
      this.#fatal(fromSystemError(err, 'ivshmem: poll on server socket'));
      return;
    }
    try {
      this.#readAvailable();
    } catch (e) {
      this.#fatal(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    this.#flushJoins();
    if (!this.#ready && this.#shm !== null && this.#own.length === this.vectors) {
      this.#ready = true;
      this.#log?.debug({ id: this.#id, shmSize: this.#shm.size, peers: this.peers() }, 'ivshmem setup complete');
      this.#settleSetup(null);
    }
  }

  #readAvailable(): void {
    while (!this.#closed) {
      let r;
      try {
        r = native.recvmsg(this.#fd, MESSAGE_SIZE - this.#msgLen, 1);
      } catch (err) {
        throw fromSystemError(err, 'ivshmem: recvmsg from server');
      }
      if (r === null) return;
      for (const fd of r.fds) {
        if (this.#msgFd >= 0) {
          native.close(fd);
          throw new ProtocolError('ivshmem: server attached two fds to one message', PROTOCOL_CODE);
        }
        this.#msgFd = fd;
      }
      if (r.fdsTruncated) throw new ProtocolError('ivshmem: server attached several fds to one message', PROTOCOL_CODE);
      if (r.eof || r.data.length === 0) {
        throw new ClosedError(this.#ready ? 'ivshmem server closed the connection' : 'ivshmem server closed the connection during setup');
      }
      r.data.copy(this.#msg, this.#msgLen);
      this.#msgLen += r.data.length;
      if (this.#msgLen < MESSAGE_SIZE) continue;
      const value = decodeMessage(this.#msg);
      const fd = this.#msgFd;
      this.#msgLen = 0;
      this.#msgFd = -1;
      try {
        this.#process(value, fd);
      } catch (e) {
        if (fd >= 0) native.close(fd);
        throw e;
      }
    }
  }

  /** Takes ownership of `fd` on success; throws (caller closes fd) on a protocol error. */
  #process(value: number | null, fd: number): void {
    const raw = this.#msg.readBigInt64LE(0);
    switch (this.#phase) {
      case 'version':
        if (value !== PROTOCOL_VERSION) throw this.#error(`server sent version ${raw}, expecting ${PROTOCOL_VERSION}`);
        if (fd >= 0) throw this.#error('server sent invalid version message (with an fd)');
        this.#phase = 'id';
        return;
      case 'id':
        if (fd >= 0 || value === null || value < 0) throw this.#error(`server sent invalid ID message (${raw})`);
        this.#id = value;
        this.#phase = 'body';
        return;
      case 'body':
        break;
    }
    if (value === null) throw this.#error(`server sent invalid message ${raw}`);
    if (value === SHM_MESSAGE) {
      this.#acceptShm(fd);
    } else if (fd >= 0) {
      this.#acceptEventfd(value, fd);
    } else {
      this.#peerLeft(value);
    }
  }

  #acceptShm(fd: number): void {
    if (fd < 0) throw this.#error("server didn't provide fd with shared memory message");
    if (this.#shm !== null) throw this.#error('server sent unexpected shared memory message');
    const size = regularFileSize(fd);
    if (size === null) throw this.#error('shared memory fd is not a regular file or memfd');
    if (size < MIN_SHM_SIZE || size > MAX_SHM_SIZE || !isPowerOfTwo(size)) {
      throw this.#error(`shared memory size ${size} is not a power of two in [${MIN_SHM_SIZE}, ${MAX_SHM_SIZE}]`);
    }
    this.#shm = { fd, size };
    this.#maps = new MappingSet(fd, size);
  }

  #acceptEventfd(peerId: number, fd: number): void {
    if (!isEventfd(fd)) throw this.#error(`fd for peer ${peerId} is not an eventfd`);
    // A blocking eventfd could stall the event loop on write when its counter is full.
    native.setNonblocking(fd, true);
    if (peerId === this.#id) {
      if (this.#own.length >= this.vectors) throw this.#error(`Too many eventfd received, device has ${this.vectors} vectors`);
      this.#own.push(fd);
      return;
    }
    let fds = this.#peers.get(peerId);
    if (fds === undefined) {
      if (this.#peers.size >= this.maxPeers) throw this.#error(`server announced more than ${this.maxPeers} peers`);
      fds = [];
      this.#peers.set(peerId, fds);
    }
    if (fds.length >= this.vectors) throw this.#error(`Too many eventfd received for peer ${peerId}, device has ${this.vectors} vectors`);
    fds.push(fd);
    if (!this.#announced.has(peerId)) this.#pendingJoins.add(peerId);
  }

  #peerLeft(peerId: number): void {
    const fds = this.#peers.get(peerId);
    if (peerId === this.#id || fds === undefined) {
      // QEMU logs "invalid peer" and carries on; so do we.
      this.#log?.warn({ peerId }, 'ivshmem server announced the departure of an unknown peer');
      return;
    }
    this.#peers.delete(peerId);
    for (const fd of fds) native.close(fd);
    this.#pendingJoins.delete(peerId);
    if (this.#announced.delete(peerId)) this.emit('peer-leave', peerId);
  }

  #flushJoins(): void {
    if (this.#closed) return;
    const joins = [...this.#pendingJoins].sort((a, b) => a - b);
    this.#pendingJoins.clear();
    for (const id of joins) {
      this.#announced.add(id);
      this.emit('peer-join', id);
    }
  }

  #error(message: string): ProtocolError {
    return new ProtocolError(`ivshmem: ${message}`, PROTOCOL_CODE);
  }

  #fatal(err: Error): void {
    if (this.#closed) return;
    if (this.#settle !== null) {
      this.#settleSetup(err);
      return;
    }
    this.#log?.warn({ err }, 'ivshmem connection lost');
    this.#teardown();
    this.emit('close', err);
  }

  #settleSetup(err: Error | null): void {
    this.#settle?.(err);
  }

  #teardown(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poller.close();
    native.close(this.#fd);
    this.#fd = -1;
    if (this.#msgFd >= 0) native.close(this.#msgFd);
    this.#msgFd = -1;
    this.#maps?.unmapAll();
    for (const fd of this.#own) native.close(fd);
    this.#own.length = 0;
    for (const fds of this.#peers.values()) for (const fd of fds) native.close(fd);
    this.#peers.clear();
    this.#announced.clear();
    this.#pendingJoins.clear();
    if (this.#shm !== null) native.close(this.#shm.fd);
  }

  #checkOpen(): void {
    if (this.#closed) throw new ClosedError('ivshmem device closed');
    if (this.#shm === null) throw new ClosedError('ivshmem device not set up');
  }
}
