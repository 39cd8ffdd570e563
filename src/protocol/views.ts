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

/** Bytes a domain name keeps in the daemon's registry and on the wire (DomainEntry.name). */
export const DOMAIN_NAME_MAX = 31;

/** `name` as the registry keeps it: at most DOMAIN_NAME_MAX bytes, cut on a character boundary. */
export function registryName(name: string): string {
  let out = '';
  for (const ch of name) {
    if (Buffer.byteLength(out + ch) > DOMAIN_NAME_MAX) break;
    out += ch;
  }
  return out;
}
