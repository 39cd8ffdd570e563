/**
 * kvmchan — Xen's vchan for KVM/QEMU. Public API (docs/api.md).
 */
export {
  Vchan,
  EOF,
  createServer,
  VchanServer,
  type ServerOptions,
  type VchanServerEvents,
  type VchanEvents,
  DaemonConnection,
  Shmem,
  type ShmemOptions,
  type ShmRegion,
  type ShmMmapParams,
  type ShmRegionStatus,
  type ListenOptions,
  type ConnectOptions,
  type VchanState,
  type IoOptions,
  type VchanOptions,
} from './client/index.js';
export * from './errors.js';
export { orderForMin, MIN_ORDER, MAX_ORDER } from './ring/layout.js';
