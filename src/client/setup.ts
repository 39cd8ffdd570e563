/** What a vchan endpoint receives from its daemon (wire-protocol.md VchanInfo + fds). */
import type { KvmchanError } from '../errors.js';
import type { VchanInfoData } from '../protocol/views.js';

/** The daemon connection that owns a vchan: closing it releases the vchan (wire-protocol.md). */
export interface Session {
  close(): void;
  /** Called once if the daemon connection is lost while the vchan is open. */
  onLost(cb: (err: KvmchanError) => void): void;
  /**
   * Called on each EVENT_PEER_CLOSED for `handle` (wire-protocol.md §7.3): the other side is
   * gone and stored CLOSED, re-check the ring.
   */
  onPeerClosed(handle: number, cb: () => void): void;
  /** Process what the daemon sent so far, now: a lost daemon is reported through onLost at once. */
  probe(): void;
  /** Resolves once the daemon has answered a request: it is alive (else rejects, and onLost fires). */
  ping(): Promise<void>;
}

export interface VchanSetup {
  info: VchanInfoData;
  fds: { shm: number; wait: number; kick: number };
  session: Session;
}
