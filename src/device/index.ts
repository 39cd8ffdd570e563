export type { IvshmemDeviceHandle, IvshmemDeviceEvents, IvshmemDeviceEventName, IvshmemShm } from './handle.js';
export { SocketDevice, type SocketDeviceOptions, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_PEERS } from './socket-device.js';
export { MappingSet, PAGE_SIZE } from './mappings.js';
