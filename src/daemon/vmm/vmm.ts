/**
 * The VMM backend interface (docs/architecture.md, vmm): which guests exist, when
 * they come and go, and each guest's control device: simulated guests, plain QEMU over QMP
 * and libvirt domains sit behind it alike.
 * The daemon feeds it into the registry and the pool manager. Guest identity comes
 * from here and from the device socket a guest connected on — never from anything
 * the guest says (architecture.md rule 4).
 */
import type { IvshmemServer } from '../../ivshmem/server.js';
import type { PoolAnnouncement } from '../pools/pool-manager.js';
import type { Adoption } from './device-fds.js';

export interface VmmDomain {
  /** Domain number (libvirt domain id, like a Xen domid); never 0 (the host). */
  readonly id: number;
  readonly name: string;
}

export interface VmmEvents {
  /** A guest appeared (started, or adopted when already running). */
  'domain-added': [domain: VmmDomain];
  /** A guest is gone (stopped, crashed, destroyed). */
  'domain-removed': [domain: VmmDomain];
  /** The guest attached to its control device (its daemon connected). */
  'control-join': [domain: number];
  /** The guest left its control device (its daemon died or disconnected). */
  'control-leave': [domain: number, reason: string];
}

export type VmmEventName = keyof VmmEvents;

export interface Vmm {
  /** The kind of backend, for logs and status ('simulated', 'libvirt', 'qmp'). */
  readonly kind: string;
  /** Guests that exist now, ascending by id. Call once at start, then follow the events. */
  domains(): VmmDomain[];
  /** The guest's control device; its `host` is the host peer the guest link runs on. */
  controlDevice(domain: number): IvshmemServer;
  on<K extends VmmEventName>(event: K, listener: (...args: VmmEvents[K]) => void): this;
  off<K extends VmmEventName>(event: K, listener: (...args: VmmEvents[K]) => void): this;
  /**
   * Stop following the VMM and release the backend's own resources. Guests are not
   * stopped and no 'domain-removed' is emitted (the daemon is going away, not the VMs).
   */
  close(): void;
}

/** What the daemon needs from a backend whose guests attach to devices we serve. */
export interface GuestVmmEvents extends VmmEvents {
  /** The guest attached to its control device (its daemon, or its QEMU, connected). */
  'control-join': [domain: number];
  /** The guest left its control device. */
  'control-leave': [domain: number, reason: string];
}

export interface GuestVmm {
  readonly kind: string;
  domains(): VmmDomain[];
  /** The guest's control device server (its `host` peer carries the control channel). */
  controlDevice(domain: number): IvshmemServer;
  /** Whether `domain` is one of this backend's guests. */
  has(domain: number): boolean;
  /** A pool was created for `domain`: make its VM attach to it (QMP: hot-plug). Optional. */
  plugPool?(domain: number, announcement: PoolAnnouncement): void;
  /**
   * Where `domain`'s device fds go in the service manager's fd store (device-fds.ts), or
   * undefined when its devices need not survive us (simulated guests reconnect by themselves).
   */
  fdPrefix?(domain: number): string | undefined;
  /** Stored-fd prefixes this backend may claim later (kept at start, fd-store.ts). */
  fdPrefixes?(): string[];
  /** For a domain adopted from stored fds: its device key and pools (asked once, when it is added). */
  takeAdoption?(domain: number): Adoption | undefined;
  on<K extends keyof GuestVmmEvents>(event: K, listener: (...args: GuestVmmEvents[K]) => void): this;
  close(): void;
}
