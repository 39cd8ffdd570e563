/**
 * The memory and event objects behind one vchan, as the allocator hands them
 * to the registry. On the host (this file's MemfdResourceFactory) that is a sealed
 * memfd per vchan and two eventfds; between domains (docs/architecture.md) it is a
 * slot of an ivshmem pool and interrupt vectors — the registry does not care.
 */
import { native } from '../../native.js';
import { initializeRegion, regionLength, HEADER_SIZE, type RingGeometry } from '../../ring/layout.js';
import { fromSystemError } from '../../errors.js';

export interface EndpointFds {
  shm: number;
  /** becomes readable when this side is kicked */
  wait: number;
  /** written to kick the other side */
  kick: number;
}

/**
 * How one endpoint reaches its vchan. A host process gets fds (SCM_RIGHTS); a
 * guest gets coordinates on a pool device it is already attached to: the pool,
 * the vector it waits on, and the peer (IVPosition) and vector it rings.
 */
export type EndpointAccess =
  ({ kind: 'fds' } & EndpointFds) | { kind: 'device'; pool: number; vector: number; peerId: number; peerVector: number };

export interface VchanResources {
  readonly geometry: RingGeometry;
  readonly shmOffset: number;
  readonly shmLength: number;
  /** The control page (ring-protocol.md §2), mapped in the daemon for death marking and stats. */
  readonly control: Int32Array;
  readonly server: EndpointAccess;
  readonly client: EndpointAccess;
  /** The pool device the vchan lives in (undefined: a host-only memfd). */
  readonly poolId?: number;
  /** Wake the server / the client (the daemon's kick on behalf of a dead peer, §5.3). */
  kickServer(): void;
  kickClient(): void;
  /** Release every fd and mapping. Idempotent. */
  release(): void;
}

export interface VchanResourceFactory {
  /**
   * Throws RegistryError (ENOSPC, EAGAIN...) when no memory or vector is available. `hostUid`:
   * for a host↔guest vchan, the host uid whose pool it goes to (docs/pools.md §1).
   */
  create(geometry: RingGeometry, serverDomain: number, clientDomain: number, hostUid?: number): VchanResources;
  /** Resolves when create() for this pair may succeed again after EAGAIN (a pool became ready). */
  whenCapacity?(serverDomain: number, clientDomain: number, timeoutMs: number, hostUid?: number): Promise<void>;
}

/** Host-local vchans: a sealed memfd per vchan (docs/ivshmem.md §5) and two eventfds. */
export class MemfdResourceFactory implements VchanResourceFactory {
  create(geometry: RingGeometry): VchanResources {
    const length = regionLength(geometry);
    const opened: number[] = [];
    let control: ArrayBuffer | undefined;
    try {
      const shm = native.memfdCreate('kvmchan-vchan', length, true);
      opened.push(shm);
      // Initialise through a temporary full mapping, then keep only the control page.
      const whole = native.mmap(shm, length, 0, true);
      try {
        initializeRegion(whole, 0, geometry);
      } finally {
        native.munmap(whole);
      }
      control = native.mmap(shm, HEADER_SIZE, 0, true);
      const serverWait = native.eventfd(0, 0o4000 /* EFD_NONBLOCK */);
      opened.push(serverWait);
      const clientWait = native.eventfd(0, 0o4000);
      opened.push(clientWait);
      return new MemfdResources(geometry, length, shm, serverWait, clientWait, control);
    } catch (err) {
      if (control !== undefined) native.munmap(control);
      for (const fd of opened) native.close(fd);
      throw fromSystemError(err, 'allocating vchan memory');
    }
  }
}

class MemfdResources implements VchanResources {
  readonly shmOffset = 0;
  readonly control: Int32Array;
  readonly server: EndpointAccess;
  readonly client: EndpointAccess;
  readonly #fds: number[];
  readonly #serverWait: number;
  readonly #clientWait: number;
  readonly #mapping: ArrayBuffer;
  #released = false;

  constructor(
    readonly geometry: RingGeometry,
    readonly shmLength: number,
    shm: number,
    serverWait: number,
    clientWait: number,
    mapping: ArrayBuffer,
  ) {
    this.#mapping = mapping;
    this.control = new Int32Array(mapping);
    this.server = { kind: 'fds', shm, wait: serverWait, kick: clientWait };
    this.client = { kind: 'fds', shm, wait: clientWait, kick: serverWait };
    this.#fds = [shm, serverWait, clientWait];
    this.#serverWait = serverWait;
    this.#clientWait = clientWait;
  }

  kickServer(): void {
    if (!this.#released) native.eventfdWrite(this.#serverWait, 1);
  }

  kickClient(): void {
    if (!this.#released) native.eventfdWrite(this.#clientWait, 1);
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    native.munmap(this.#mapping);
    for (const fd of this.#fds) native.close(fd);
  }
}
