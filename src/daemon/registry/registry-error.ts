import { KvmchanError } from '../../errors.js';
import { Errno } from '../../protocol/constants.js';

/**
 * A request the registry refuses. `errnoName` becomes the negative errno of the
 * wire reply (wire-protocol.md, replies); the connection stays up.
 */
export class RegistryError extends KvmchanError {
  readonly errnoName: `E${string}`;
  constructor(errnoName: `E${string}`, message: string) {
    super(message, `KVMCHAN_E_${errnoName}`);
    this.name = 'RegistryError';
    this.errnoName = errnoName;
  }
}

/** The negative errno a reply carries for a failed request: a refusal's own, -EIO for anything else. */
export function errnoOf(err: unknown): number {
  if (err instanceof RegistryError) return -((Errno as Record<string, number>)[err.errnoName] ?? Errno.EIO);
  return -Errno.EIO;
}
