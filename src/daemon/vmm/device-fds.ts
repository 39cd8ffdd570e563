/**
 * The fds of a VM's devices as the service manager's fd store holds them (fd-store.ts;
 * docs/operations.md, "systemd"): what a restarted kvmchand needs to adopt a running VM
 * without QEMU reconnecting — the device's memfd, the host's vector eventfds (QEMU rings them
 * for the guest's doorbell writes) and the guest's (we kick through them).
 *
 * Names: `kvmchan/<backend>/<domain key>/<device>/<role>` with device `ctl` (control device)
 * or `pool<id>u<host uid>` (a host pool), role `shm` or `p<peer>v<vector>`.
 */
import { native } from '../../native.js';
import { isEventfd, regularFileSize } from '../../ivshmem/fd-check.js';
import type { IvshmemServer } from '../../ivshmem/server.js';
import type { FdStore } from '../fd-store.js';
import { DEVICE_HEADER_PAGE, DEVICE_HEADER_SIZE, DeviceKind, decodeDeviceHeader, headerOffset } from '../../ivshmem/device-header.js';
import { CONTROL_DEVICE_SIZE, GUEST_CONTROL_PEER } from '../guest-link/host-link.js';
import type { AdoptedPool } from '../pools/pool-manager.js';

/** A device rebuilt from stored fds (all owned by whoever holds this). */
export interface StoredDevice {
  shm: number;
  size: number;
  vectors: number;
  /** Peer id → its eventfds, index = vector. */
  peers: Map<number, number[]>;
}

/** The prefix of one domain's names; `key` is the QMP VM name or the libvirt UUID. */
export function domainFdPrefix(backend: 'qmp' | 'libvirt', key: string): string {
  return `kvmchan/${backend}/${key}/`;
}

export const CONTROL_FD_DEVICE = 'ctl';

export function poolFdDevice(pool: number, hostUid: number): string {
  return `pool${pool}u${hostUid}`;
}

/** Pool id and host uid of a `pool<id>u<uid>` device name, or null. */
export function parsePoolFdDevice(device: string): { pool: number; hostUid: number } | null {
  const m = /^pool([1-9][0-9]{0,9})u(0|[1-9][0-9]{0,9})$/.exec(device);
  if (m === null) return null;
  const pool = Number(m[1]);
  const hostUid = Number(m[2]);
  if (pool > 0xffffffff || hostUid > 0xffffffff) return null;
  return { pool, hostUid };
}

/** Store the shm and the eventfds of `peers` of `server` under `<prefix><device>/`. */
export function storeDeviceFds(store: FdStore, prefix: string, device: string, server: IvshmemServer, peers: readonly number[]): void {
  if (!store.enabled) return;
  store.store(`${prefix}${device}/shm`, server.shmFd);
  for (const p of peers) {
    const fds = server.peerEventfds(p) ?? [];
    fds.forEach((fd, v) => {
      store.store(`${prefix}${device}/p${p}v${v}`, fd);
    });
  }
}

export function closeStoredDevice(d: StoredDevice): void {
  native.close(d.shm);
  for (const fds of d.peers.values()) for (const fd of fds) native.close(fd);
}

/**
 * Group one domain's stored fds (names relative to its prefix) by device. A device whose fds do
 * not make a whole device (no shm, a gap in the vectors, peers with different vector counts, an
 * fd of the wrong kind) is closed and listed in `rejected`, as is every name we cannot parse.
 */
export function collectStoredDevices(fds: Map<string, number>): { devices: Map<string, StoredDevice>; rejected: string[] } {
  type Raw = { shm: number[]; peers: Map<number, Map<number, number>>; junk: number[] };
  const raw = new Map<string, Raw>();
  const rejected: string[] = [];
  for (const [name, fd] of fds) {
    const m = /^([a-z0-9]{1,40})\/(shm|p([0-9]{1,3})v([0-9]{1,4}))$/.exec(name);
    if (m === null) {
      native.close(fd);
      rejected.push(name);
      continue;
    }
    const dev: Raw = raw.get(m[1]!) ?? { shm: [], peers: new Map<number, Map<number, number>>(), junk: [] };
    raw.set(m[1]!, dev);
    if (m[2] === 'shm') {
      dev.shm.push(fd);
      continue;
    }
    const peer = Number(m[3]);
    const vector = Number(m[4]);
    const vs = dev.peers.get(peer) ?? new Map<number, number>();
    dev.peers.set(peer, vs);
    if (vs.has(vector)) dev.junk.push(fd);
    else vs.set(vector, fd);
  }
  const devices = new Map<string, StoredDevice>();
  for (const [name, d] of raw) {
    const all = [...d.shm, ...d.junk, ...[...d.peers.values()].flatMap((vs) => [...vs.values()])];
    const size = d.shm.length === 1 ? regularFileSize(d.shm[0]!) : null;
    let vectors = -1;
    let whole = size !== null && size > 0 && d.junk.length === 0 && d.peers.has(0);
    const peers = new Map<number, number[]>();
    for (const [peer, vs] of d.peers) {
      if (!whole) break;
      if (vectors < 0) vectors = vs.size;
      const list: number[] = [];
      for (let v = 0; v < vs.size; v++) {
        const fd = vs.get(v);
        if (fd === undefined || !isEventfd(fd)) break;
        list.push(fd);
      }
      if (list.length !== vs.size || vs.size !== vectors) whole = false;
      peers.set(peer, list);
    }
    if (!whole || vectors < 1) {
      for (const fd of all) native.close(fd);
      rejected.push(name);
      continue;
    }
    devices.set(name, { shm: d.shm[0]!, size: size!, vectors, peers });
  }
  return { devices, rejected };
}

/** What a backend hands the daemon for a VM it adopted (Daemon: device key, pools). */
export interface Adoption {
  /** The guest's device key, read back from the control device's header. */
  deviceKey: Buffer;
  pools: AdoptedPool[];
  /**
   * Ids of every pool device the VM still carries, adopted or not (pair pools, retired pools):
   * never handed out again, or a new pool's device name would clash with one in the VM.
   */
  plugged?: readonly number[];
}

/**
 * Sort one VM's stored fds into what can be adopted: the control device (whole, 256 KiB, one
 * vector, peers 0 and 1, a readable header with the device key) and the host pools whose
 * devices the VM still carries (`plugged`: the device ids QEMU lists, `poolDeviceId`: the id a
 * pool was plugged with). Everything else is closed and removed from the store. Null when the
 * control device cannot be adopted (then nothing is kept).
 */
export function adoptableDevices(
  store: FdStore,
  prefix: string,
  stored: Map<string, number>,
  plugged: { control: boolean; pool: (pool: number) => boolean },
): { control: StoredDevice; adoption: Adoption } | null {
  const { devices, rejected } = collectStoredDevices(stored);
  for (const r of rejected) store.removeUnder(`${prefix}${r}${r.includes('/') ? '' : '/'}`);
  const control = devices.get(CONTROL_FD_DEVICE);
  devices.delete(CONTROL_FD_DEVICE);
  const drop = (name: string, d: StoredDevice): void => {
    closeStoredDevice(d);
    store.removeUnder(`${prefix}${name}/`);
  };
  const key = control !== undefined ? controlKey(control) : null;
  if (
    control === undefined ||
    key === null ||
    !plugged.control ||
    control.size !== CONTROL_DEVICE_SIZE ||
    control.vectors !== 1 ||
    control.peers.size !== 2 ||
    !control.peers.has(GUEST_CONTROL_PEER)
  ) {
    if (control !== undefined) drop(CONTROL_FD_DEVICE, control);
    for (const [name, d] of devices) drop(name, d);
    return null;
  }
  const pools: AdoptedPool[] = [];
  for (const [name, d] of devices) {
    const id = parsePoolFdDevice(name);
    if (id === null || !plugged.pool(id.pool) || d.peers.size !== 2 || !d.peers.has(1)) {
      drop(name, d);
      continue;
    }
    pools.push({ pool: id.pool, hostUid: id.hostUid, device: d });
  }
  return { control, adoption: { deviceKey: key, pools: pools.sort((a, b) => a.pool - b.pool) } };
}

/** The device id (QMP) or `<shmem>` name (libvirt) of the control device and of pool `id`. */
export const CONTROL_DEVICE_NAME = 'kvmchan-ctl';
export function poolDeviceName(pool: number): string {
  return `kvmchan-pool-${pool}`;
}

/**
 * What a VM carrying our devices `plugged` (names as above) can be adopted with from its stored
 * fds: adoptableDevices() plus every plugged pool id (Adoption.plugged). Null: nothing stored,
 * or no whole control device — the VM is stale.
 */
export function adoptionFor(
  store: FdStore | undefined,
  prefix: string,
  stored: Map<string, number>,
  plugged: readonly string[],
): { control: StoredDevice; adoption: Adoption } | null {
  if (stored.size === 0 || store === undefined) return null;
  const found = adoptableDevices(store, prefix, stored, {
    control: plugged.includes(CONTROL_DEVICE_NAME),
    pool: (pool) => plugged.includes(poolDeviceName(pool)),
  });
  if (found !== null) found.adoption.plugged = pluggedPoolIds(plugged);
  return found;
}

/** The device key in a stored control device's header, or null. */
function controlKey(d: StoredDevice): Buffer | null {
  let page: ArrayBuffer | null = null;
  try {
    page = native.mmap(d.shm, DEVICE_HEADER_PAGE, headerOffset(d.size), false);
    // A private copy first: the guest can write this page.
    const h = decodeDeviceHeader(new Uint8Array(page.slice(0, DEVICE_HEADER_SIZE)));
    return h.kind === DeviceKind.CONTROL && h.key !== undefined ? h.key : null;
  } catch {
    return null;
  } finally {
    if (page !== null) native.munmap(page);
  }
}

/**
 * Pool ids of the devices named `kvmchan-pool-<id>` among `names` (QMP device ids and libvirt
 * `<shmem>` names follow that pattern alike).
 */
export function pluggedPoolIds(names: readonly string[]): number[] {
  const ids: number[] = [];
  for (const n of names) {
    const m = /^kvmchan-pool-([1-9][0-9]{0,9})$/.exec(n);
    if (m !== null && Number(m[1]) <= 0xffffffff) ids.push(Number(m[1]));
  }
  return ids.sort((a, b) => a - b);
}

/** Close every fd of a claimed set (nothing could use them). */
export function closeFds(fds: Map<string, number>): void {
  for (const fd of fds.values()) native.close(fd);
}
