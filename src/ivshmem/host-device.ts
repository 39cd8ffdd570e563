/**
 * A peer that lives inside the server process rather than behind a socket: above all the
 * host daemon itself, which reserves peer id 0 on every device (docs/ivshmem.md §2) so a
 * guest always rings the host at (0 << 16) | vector. It owns its interrupt eventfds like any
 * peer; the server sends them to every socket client as "peer 0, vector v".
 */
import { EventEmitter } from 'node:events';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { native } from '../native.js';
import type { DeviceEvents, Device, DeviceShm } from './device.js';
import { MappingSet } from './mappings.js';

/** What a HostDevice needs from the server that owns it. */
export interface HostDeviceServer {
  /** The eventfds of peer `id` (index = vector), or undefined when unknown. */
  peerEventfds(id: number): readonly number[] | undefined;
  /** Ids of all peers except `self`, ascending. */
  peerIds(self: number): number[];
  /** Called once by HostDevice.close(). */
  removeLocalPeer(id: number): void;
}

export class HostDevice extends EventEmitter<DeviceEvents> implements Device {
  readonly ivPosition: number;
  readonly vectors: number;
  readonly shm: DeviceShm;
  readonly #host: HostDeviceServer;
  readonly #eventfds: readonly number[];
  readonly #maps: MappingSet;
  #closed = false;

  /** @internal Created by IvshmemServer.addLocalPeer(); the eventfds stay owned by the server. */
  constructor(host: HostDeviceServer, id: number, eventfds: readonly number[], shm: DeviceShm) {
    super();
    this.#host = host;
    this.ivPosition = id;
    this.vectors = eventfds.length;
    this.#eventfds = eventfds;
    this.shm = { fd: shm.fd, size: shm.size };
    this.#maps = new MappingSet(shm.fd, shm.size);
  }

  get closed(): boolean {
    return this.#closed;
  }

  map(offset?: number, length?: number, writable?: boolean): ArrayBuffer {
    this.#checkOpen();
    return this.#maps.map(offset, length, writable);
  }

  unmap(buffer: ArrayBuffer): void {
    this.#maps.unmap(buffer);
  }

  interruptFd(vector: number): number {
    this.#checkOpen();
    const fd = this.#eventfds[vector];
    if (!Number.isInteger(vector) || fd === undefined) {
      throw new InvalidArgumentError(`interruptFd: vector ${vector} not in [0, ${this.vectors})`);
    }
    return fd;
  }

  doorbellFd(peerId: number, vector: number): number | null {
    if (this.#closed || peerId === this.ivPosition) return null;
    return this.#host.peerEventfds(peerId)?.[vector] ?? null;
  }

  doorbell(peerId: number, vector: number): void {
    const fd = this.doorbellFd(peerId, vector);
    if (fd !== null) native.eventfdWrite(fd, 1);
  }

  peers(): number[] {
    return this.#closed ? [] : this.#host.peerIds(this.ivPosition);
  }

  peerVectors(peerId: number): number {
    if (this.#closed || peerId === this.ivPosition) return 0;
    return this.#host.peerEventfds(peerId)?.length ?? 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#host.removeLocalPeer(this.ivPosition);
    // removeLocalPeer() calls back into detach().
  }

  /** @internal The server removed this peer (close() or server shutdown). */
  detach(error: Error | null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#maps.unmapAll();
    this.emit('close', error);
  }

  /** @internal */
  notifyJoin(id: number): void {
    if (!this.#closed) this.emit('peer-join', id);
  }

  /** @internal */
  notifyLeave(id: number): void {
    if (!this.#closed) this.emit('peer-leave', id);
  }

  #checkOpen(): void {
    if (this.#closed) throw new ClosedError(`ivshmem peer ${this.ivPosition} is closed`);
  }
}
