/**
 * What the local socket needs from "the rest of the daemon" (architecture.md rule 3):
 * on the host the registry answers directly; in a guest the requests are
 * forwarded to the host over the control channel. Grants always arrive as fds,
 * ready for SCM_RIGHTS.
 */
import type { Caller, DomainInfo, VchanSnapshot } from './registry/registry.js';
import type { EndpointFds } from './registry/vchan-resources.js';
import type { VchanInfoData } from '../protocol/views.js';
import type { PoolInfo } from './pools/pool-manager.js';

export interface FdGrant extends VchanInfoData {
  fds: EndpointFds;
  /** Called once the fds were handed over (or the grant abandoned): closes any temporary fds. */
  release(): void;
}

export interface DomainStatus extends DomainInfo {
  vchans: number;
}

/** A pool device as `kvmchan status` shows it (wire-protocol.md §6.10). */
export type PoolStatus = PoolInfo;

export interface VchanService {
  readonly localDomain: number;
  serverInit(caller: Caller, peerDomain: number, port: number, readMin: number, writeMin: number): Promise<FdGrant>;
  clientInit(caller: Caller, serverDomain: number, port: number, timeoutMs: number): Promise<FdGrant>;
  close(caller: Caller, handle: number): Promise<void>;
  /** The local connection ended: release everything it held, cancel its waits. */
  dropConnection(connId: number): void;
  listDomains(caller: Caller): Promise<DomainStatus[]>;
  listVchans(caller: Caller): Promise<VchanSnapshot[]>;
  listPools(caller: Caller): Promise<PoolStatus[]>;
}
