/**
 * The one request path of the daemon (architecture.md rule 3): what the local socket and the
 * guest link need from "the rest of the daemon". On the host the registry answers
 * (`HostVchanService`) for both, for a caller whose scope says what it may see (a local uid, a
 * guest domain); in a guest the requests are forwarded to the host over the guest link
 * (`GuestVchanService`).
 */
import type { Caller, DomainInfo, VchanSnapshot } from './registry/registry.js';
import type { EndpointAccess } from './registry/vchan-resources.js';
import type { VchanInfoData } from '../protocol/views.js';
import type { PoolInfo } from './pools/pool-manager.js';

/**
 * What an endpoint is told about its vchan: the geometry, and how to reach the region — fds for
 * a process (ready for SCM_RIGHTS), pool coordinates for a guest.
 */
export interface Grant extends VchanInfoData {
  access: EndpointAccess;
  /** Called once the grant was handed over (or abandoned): closes any temporary fds. */
  release(): void;
}

export interface DomainStatus extends DomainInfo {
  vchans: number;
  /** The domain's kvmchand is reachable (wire-protocol.md §6.6 CONTROL_UP). */
  controlUp: boolean;
}

/** A pool device as `kvmchan status` shows it (wire-protocol.md §6.10). */
export type PoolStatus = PoolInfo;

export interface VchanService {
  /** The domain this daemon runs in. */
  readonly localDomain: number;
  serverInit(caller: Caller, peerDomain: number, port: number, readMin: number, writeMin: number): Promise<Grant>;
  clientInit(caller: Caller, serverDomain: number, port: number, timeoutMs: number): Promise<Grant>;
  close(caller: Caller, handle: number): Promise<void>;
  /** The caller's connection ended: release everything it held, cancel its waits. */
  dropConnection(connId: number): void;
  listDomains(caller: Caller): Promise<DomainStatus[]>;
  /** The vchans the caller may see (its scope decides), ascending by handle. */
  listVchans(caller: Caller): Promise<VchanSnapshot[]>;
  /** The pools the caller may see (a guest: those it is a member of), ascending by id. */
  listPools(caller: Caller): Promise<PoolStatus[]>;
}
