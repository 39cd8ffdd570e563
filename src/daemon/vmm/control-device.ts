/**
 * A guest's control device as every VMM backend creates it (docs/pools.md §7,
 * docs/vms-qmp.md): a sealed 256 KiB memfd, 1 vector, the host as peer 0 and the guest on
 * `<runtimeDir>/domains/<id>/control.sock` with the fixed IVPosition 1. The socket's directory
 * names the guest, so whoever connects there is that guest.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { HOST_PEER_ID, IvshmemServer } from '../../ivshmem/server.js';
import { VmmError } from '../../errors.js';
import { closeStoredDevice, type StoredDevice } from './device-fds.js';
import { native } from '../../native.js';
import { CONTROL_DEVICE_SIZE, GUEST_CONTROL_PEER } from '../guest-link/host-link.js';
import { CONTROL_SOCKET, ensureDomainDir } from './domain-dir.js';
import type { GuestVmmEvents } from './vmm.js';

export interface ControlDevice {
  dir: string;
  socketPath: string;
  server: IvshmemServer;
}

/**
 * Create `domain`'s directory and control device. `onJoin` / `onLeave` fire when the guest
 * (IVPosition 1) attaches and leaves.
 */
export function createControlDevice(opts: {
  runtimeDir: string;
  domain: number;
  /** Another directory than `<runtimeDir>/domains/<id>/`, created by the caller (libvirt boot devices). */
  dir?: string;
  log?: Logger | undefined;
  /**
   * Rebuild the device from a restarted daemon's stored fds (device-fds.ts) instead of a new
   * memfd: the guest (its QEMU) is already attached and joins at once. Taken over, closed on error.
   */
  adopt?: StoredDevice;
  onJoin: () => void;
  onLeave: (reason: string) => void;
}): ControlDevice {
  const { runtimeDir, domain, log } = opts;
  const dir = opts.dir ?? ensureDomainDir(runtimeDir, domain);
  const socketPath = path.join(dir, CONTROL_SOCKET);
  const adopt = opts.adopt;
  // The device duplicates the memfd; ours is closed right away.
  const shm = adopt?.shm ?? native.memfdCreate(`kvmchan-control-${domain}`, CONTROL_DEVICE_SIZE, true);
  let server: IvshmemServer;
  try {
    server = new IvshmemServer({
      ...(adopt !== undefined ? { hostEventfds: adopt.peers.get(HOST_PEER_ID)! } : {}),
      socketPath,
      shmFd: shm,
      shmSize: CONTROL_DEVICE_SIZE,
      vectors: 1,
      hostPeer: true,
      maxClients: 1,
      // The directory is the gate (domain-dir.ts): 0660 lets QEMU's group in where it is shared.
      socketMode: 0o660,
      ...(log !== undefined ? { log: log.child({ domain }) } : {}),
      authorize: ({ cred, peerId }) => {
        log?.info({ domain, peerId, peerPid: cred?.pid, uid: cred?.uid }, 'guest attaching to its control device');
        return true;
      },
    });
  } catch (err) {
    if (adopt !== undefined) closeStoredDevice({ ...adopt, shm: -1 });
    throw err;
  } finally {
    native.close(shm);
  }
  server.on('peer-join', (info) => {
    if (info.id === GUEST_CONTROL_PEER) opts.onJoin();
  });
  server.on('peer-leave', (info, reason) => {
    if (info.id === GUEST_CONTROL_PEER) opts.onLeave(reason);
  });
  const guest = adopt?.peers.get(GUEST_CONTROL_PEER);
  let guestTaken = false;
  try {
    // Fixed id: the guest reads IVPosition 1 on its control device.
    server.addSocket(socketPath, GUEST_CONTROL_PEER);
    if (adopt !== undefined) {
      if (guest === undefined) throw new VmmError('the stored control device has no guest vectors', 'KVMCHAN_E_VMM_STALE');
      server.adoptPeer(GUEST_CONTROL_PEER, guest);
      guestTaken = true;
    }
  } catch (err) {
    server.close();
    if (!guestTaken) for (const fd of guest ?? []) native.close(fd);
    throw err;
  }
  return { dir, socketPath, server };
}

/** A backend's record of one guest, as far as its control device's join and leave concern it. */
export interface ControlWatch {
  readonly id: number;
  readonly state: string;
  controlJoined: boolean;
}

/**
 * `guest`'s control device for a backend (`vmm`): fresh, or rebuilt on `adopt`. Join and leave
 * keep `guest.controlJoined` and, while the guest is served, become the backend's `control-join`
 * and `control-leave` events.
 */
export function watchedControlDevice(opts: {
  runtimeDir: string;
  log?: Logger | undefined;
  adopt?: StoredDevice | undefined;
  vmm: { emit<K extends keyof GuestVmmEvents>(event: K, ...args: GuestVmmEvents[K]): boolean };
  guest: ControlWatch;
}): ControlDevice {
  const { vmm, guest } = opts;
  return createControlDevice({
    runtimeDir: opts.runtimeDir,
    domain: guest.id,
    log: opts.log,
    ...(opts.adopt === undefined ? {} : { adopt: opts.adopt }),
    onJoin: () => {
      guest.controlJoined = true;
      if (guest.state === 'serving') vmm.emit('control-join', guest.id);
    },
    onLeave: (reason) => {
      const was = guest.controlJoined;
      guest.controlJoined = false;
      if (was && guest.state === 'serving') vmm.emit('control-leave', guest.id, reason);
    },
  });
}
