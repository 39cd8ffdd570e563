/**
 * Per-connection allow masks (docs/wire-protocol.md §5.2, §8) and the CHECK_COMMAND answer.
 * The daemon builds a mask from the connection kind and its policy (credentials); the codec
 * answers -EPERM for anything outside it.
 */
import { Command, type CommandId, Errno } from './constants.js';
import { commandSpec } from './messages.js';
import type { Transport } from './types.js';

/** Connection kinds of §8. */
export type ConnectionKind = 'local' | 'guest-control';

/** What each kind may use unless policy narrows it (§8). */
export const DEFAULT_COMMANDS: { readonly [K in ConnectionKind]: readonly CommandId[] } = {
  local: [
    Command.GET_VERSION,
    Command.CHECK_COMMAND,
    Command.VCHAN_SERVER_INIT,
    Command.VCHAN_CLIENT_INIT,
    Command.VCHAN_CLOSE,
    Command.LIST_DOMAINS,
    Command.LIST_VCHANS,
    Command.LIST_POOLS,
    Command.SHM_SHARE,
    Command.SHM_MAP,
    Command.SHM_UNMAP,
    Command.SHM_RELEASE,
    Command.LIST_REGIONS,
  ],
  'guest-control': [
    Command.GET_VERSION,
    Command.CHECK_COMMAND,
    Command.GUEST_HELLO,
    Command.GUEST_VCHAN_SERVER_INIT,
    Command.GUEST_VCHAN_CLIENT_INIT,
    Command.GUEST_VCHAN_CLOSE,
    Command.GUEST_CONN_CLOSED,
    Command.GUEST_SHM_SHARE,
    Command.GUEST_SHM_MAP,
    Command.GUEST_SHM_UNMAP,
    Command.GUEST_SHM_RELEASE,
    Command.LIST_DOMAINS,
    Command.LIST_VCHANS,
    Command.LIST_POOLS,
  ],
};

export const TRANSPORT_OF: { readonly [K in ConnectionKind]: Transport } = {
  local: 'seqpacket',
  'guest-control': 'stream',
};

export class AllowMask {
  readonly #ids: Set<number>;

  constructor(ids: Iterable<CommandId> = []) {
    this.#ids = new Set(ids);
  }

  static forKind(kind: ConnectionKind): AllowMask {
    return new AllowMask(DEFAULT_COMMANDS[kind]);
  }

  allows(id: number): boolean {
    return this.#ids.has(id);
  }

  allow(id: CommandId): this {
    this.#ids.add(id);
    return this;
  }

  deny(id: CommandId): this {
    // GET_VERSION and CHECK_COMMAND are the handshake (§6.1–6.2): always allowed.
    if (id !== Command.GET_VERSION && id !== Command.CHECK_COMMAND) this.#ids.delete(id);
    return this;
  }

  /** A predicate for RequestDecodeOptions.allowed. */
  get predicate(): (id: CommandId) => boolean {
    return (id) => this.#ids.has(id);
  }
}

/**
 * The err of a CHECK_COMMAND reply (§6.2): 0 if `id` is a known command usable on this
 * connection, -ENOSYS if unknown (event ids and reserved ids included), -EPERM otherwise.
 */
export function checkCommand(id: number, mask: AllowMask, transport: Transport): number {
  const spec = commandSpec(id);
  if (!spec) return -Errno.ENOSYS;
  if (!spec.transports.includes(transport) || !mask.allows(id)) return -Errno.EPERM;
  return 0;
}
