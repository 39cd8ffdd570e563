/**
 * The ivshmem device as the code above it sees it (architecture.md rule 1): one shared-memory
 * object, our own interrupt vectors (eventfds that become readable when a peer rings us) and
 * doorbells to ring the other peers. Three implementations share this interface:
 *  - the host daemon's own peer on its ivshmem server (src/ivshmem/local-peer.ts),
 *  - a simulated guest connected to the server exactly as QEMU is (./socket-device.ts),
 *  - a real guest driving the PCI device through VFIO (./vfio-device.ts).
 * Ring code only ever needs `interruptFd()` to wait on and `doorbellFd()`/`doorbell()` to kick.
 */

/** Events every handle emits. */
export interface DeviceEvents {
  /** A peer became known (all its vectors that arrived in the same burst are usable). */
  'peer-join': [peerId: number];
  /** A peer left; its doorbells are gone. */
  'peer-leave': [peerId: number];
  /** The handle is closed: by close() (error null) or because the fabric went away. */
  close: [error: Error | null];
}

export type DeviceEventName = keyof DeviceEvents;

export interface DeviceShm {
  /** The shared-memory fd, owned by the handle (dup it to keep it beyond close()). */
  readonly fd: number;
  /** Its size in bytes: a power of two ≥ 4096. */
  readonly size: number;
  /**
   * Where the shared memory starts in `fd` (mmap/pread offset). Absent or 0 for a memfd; a VFIO
   * device fd holds BAR2 at its region offset (docs/ivshmem.md §8). Whoever maps `fd` itself
   * (a vchan client) maps at `offset` + the position inside the shared memory.
   */
  readonly offset?: number;
}

export interface Device {
  /** Our own peer id (what a guest reads from the IVPosition register). */
  readonly ivPosition: number;
  /** Number of interrupt vectors we own. */
  readonly vectors: number;
  readonly shm: DeviceShm;
  readonly closed: boolean;

  /**
   * Map [offset, offset + length) of the shared memory (MAP_SHARED, read-write unless
   * `writable` is false). `offset` must be page aligned; the range must lie inside shm.
   * Mappings made here are unmapped (their ArrayBuffers detached) by close().
   */
  map(offset?: number, length?: number, writable?: boolean): ArrayBuffer;
  /** Unmap a buffer returned by map() (detaches it). */
  unmap(buffer: ArrayBuffer): void;

  /** The eventfd that becomes readable when a peer rings our `vector`. Owned by the handle. */
  interruptFd(vector: number): number;
  /**
   * The eventfd whose write rings `peerId` on `vector`, or null when that doorbell is not
   * known (yet). Owned by the handle and closed when the peer leaves: dup it to keep it.
   */
  doorbellFd(peerId: number, vector: number): number | null;
  /**
   * Ring `peerId` on `vector`. Like the hardware register, a doorbell to an unknown peer or
   * vector is silently dropped (docs/ivshmem.md §5, "The doorbell is a hint"): the real state lives in shared memory.
   */
  doorbell(peerId: number, vector: number): void;
  /** Ids of the other peers currently known, ascending. */
  peers(): number[];
  /** Number of vectors known for `peerId` (0 when unknown). */
  peerVectors(peerId: number): number;

  on<K extends DeviceEventName>(event: K, listener: (...args: DeviceEvents[K]) => void): this;
  once<K extends DeviceEventName>(event: K, listener: (...args: DeviceEvents[K]) => void): this;
  off<K extends DeviceEventName>(event: K, listener: (...args: DeviceEvents[K]) => void): this;

  /** Release everything (mappings, fds, connection). Idempotent. */
  close(): void;
}
