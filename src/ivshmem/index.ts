export {
  IvshmemServer,
  HOST_PEER_ID,
  DEFAULT_MAX_CLIENTS,
  MAX_CLIENTS,
  type IvshmemServerOptions,
  type IvshmemServerEvents,
  type PeerInfo,
  type PeerKind,
  type AuthorizeInfo,
} from './server.js';
export { HostDevice } from './host-device.js';
export * from './protocol.js';
export type { Device, DeviceEvents, DeviceEventName, DeviceShm } from './device.js';
export { SocketDevice, type SocketDeviceOptions, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_PEERS } from './socket-device.js';
export { MappingSet, PAGE_SIZE } from './mappings.js';
