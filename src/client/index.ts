import { Vchan as VchanClass } from './vchan.js';
import { listen, connect, type ListenOptions, type ConnectOptions } from './connect.js';

/** `Vchan.listen()` / `Vchan.connect()` live on the class for discoverability. */
export const Vchan: typeof VchanClass & {
  listen: (options: ListenOptions) => Promise<VchanClass>;
  connect: (options: ConnectOptions) => Promise<VchanClass>;
} = Object.assign(VchanClass, { listen, connect });
export type Vchan = VchanClass;
export type { ListenOptions, ConnectOptions };
export { EOF, type VchanState, type VchanEvents, type IoOptions, type VchanOptions } from './vchan.js';
export { createServer, VchanServer, type ServerOptions, type VchanServerEvents } from './server.js';
export { DaemonConnection } from './daemon-connection.js';
export { Shmem, type ShmemOptions, type ShmRegion, type ShmMmapParams, type ShmRegionStatus } from './shmem.js';
