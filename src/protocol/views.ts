/**
 * The decoded view of a vchan grant that both ends of the local socket use: the daemon fills
 * it, the client receives it (wire-protocol.md §6.3). Kept here, below both, so neither the
 * client nor the daemon imports the other (docs/architecture.md, "Layers").
 */
import { VchanRole } from './constants.js';
import type { VchanInfo } from './types.js';
import type { Role } from '../ring/layout.js';

export interface VchanInfoData {
  handle: number;
  role: Role;
  readOrder: number;
  writeOrder: number;
  localDomain: number;
  peerDomain: number;
  port: number;
  shmOffset: number;
  shmLength: number;
}

/** The facts of a grant as the wire's VchanInfo fields (wire-protocol.md §6.3). */
export function toWireInfo(g: VchanInfoData): VchanInfo {
  return {
    handle: g.handle,
    role: g.role === 'server' ? VchanRole.SERVER : VchanRole.CLIENT,
    readOrder: g.readOrder,
    writeOrder: g.writeOrder,
    localDomain: g.localDomain,
    peerDomain: g.peerDomain,
    port: g.port,
    shmOffset: g.shmOffset,
    shmLength: g.shmLength,
  };
}

/** The wire's VchanInfo as a VchanInfoData (the client side of toWireInfo). */
export function fromWireInfo(info: VchanInfo): VchanInfoData {
  return {
    handle: info.handle,
    role: info.role === VchanRole.SERVER ? 'server' : 'client',
    readOrder: info.readOrder,
    writeOrder: info.writeOrder,
    localDomain: info.localDomain,
    peerDomain: info.peerDomain,
    port: info.port,
    shmOffset: info.shmOffset,
    shmLength: info.shmLength,
  };
}
