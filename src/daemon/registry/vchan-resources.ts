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
  /**
   * Wake the server / the client through its interrupt (a pool vchan with a guest, ring-protocol.md
   * §5.3). A host-only memfd vchan has none: the daemon tells a host process over its own
   * connection instead (wire-protocol.md §7.3), never through an eventfd the peer shares.
   */
  kickServer(): void;
  kickClient(): void;
  /**
   * Both endpoints have been handed what they need: the daemon drops every fd it kept only to
   * hand over, and keeps the control-page mapping (docs/pools.md §1). Idempotent.
   */
  handedOver(): void;
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
  /** The memfd and both eventfds until both endpoints have their copies (handedOver), then none. */
  #fds: number[];
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
  }

  // Host processes hear of a dead peer over their daemon connection (wire-protocol.md §7.3): the
  // daemon never writes an eventfd a peer can reconfigure (docs/security.md, "Shared eventfds").
  kickServer(): void {}

  kickClient(): void {}

  handedOver(): void {
    const fds = this.#fds;
    this.#fds = [];
    for (const fd of fds) native.close(fd);
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    native.munmap(this.#mapping);
    this.handedOver();
  }
}
