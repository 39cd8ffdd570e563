import { KvmchanError } from '../../errors.js';

/**
 * A request the registry refuses. `errnoName` becomes the negative errno of the
 * wire reply (wire-protocol.md, replies); the connection stays up.
 */
export class RegistryError extends KvmchanError {
  readonly errnoName: string;
  constructor(errnoName: string, message: string) {
    super(message, `KVMCHAN_E_${errnoName}`);
    this.name = 'RegistryError';
    this.errnoName = errnoName;
  }
}
