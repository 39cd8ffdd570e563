export {
  IvshmemDevice,
  HOST_PEER_ID,
  DEFAULT_MAX_CLIENTS,
  MAX_CLIENTS,
  type IvshmemDeviceOptions,
  type IvshmemServerEvents,
  type PeerInfo,
  type PeerKind,
  type AuthorizeInfo,
} from './server.js';
export { LocalPeer } from './local-peer.js';
export * from './protocol.js';
