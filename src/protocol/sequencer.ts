/**
 * Sequence numbers (docs/wire-protocol.md §4.1, §4.4).
 *
 * - RequestSequence: the responder's check that each request's seq is previous+1 (mod 2^32).
 * - ClientSequencer: the requester's side — allocates seqs, keeps the pending map
 *   seq → resolver, and settles each pending request when its reply arrives, in any order.
 */
import { DaemonError } from '../errors.js';
import { type CommandId, errnoName, EVENT_BIT } from './constants.js';
import { decodeInbound, encodeRequest } from './codec.js';
import { FramingError, WireErrorCode } from './errors.js';
import { messageName } from './messages.js';
import type { AnyEvent, AnyReply, Frame, ReplyOkOf, RequestBodies } from './types.js';

/** Responder side: seq of request n+1 must be seq of request n plus one; the first is free. */
export class RequestSequence {
  #expected: number | undefined;

  constructor(first?: number) {
    this.#expected = first === undefined ? undefined : first >>> 0;
  }

  /** The seq the next request must carry; undefined before the first request. */
  get expected(): number | undefined {
    return this.#expected;
  }

  /** True, and advances, if `seq` is acceptable; false (and no change) otherwise. */
  accept(seq: number): boolean {
    if (this.#expected !== undefined && seq !== this.#expected) return false;
    this.#expected = (seq + 1) >>> 0;
    return true;
  }
}

interface Pending {
  readonly id: number;
  readonly resolve: (reply: AnyReply) => void;
  readonly reject: (err: Error) => void;
  abandoned: boolean;
}

export interface ClientSequencerOptions {
  /** Seq of the first request (default 1). Any u32 is valid (§4.1). */
  readonly firstSeq?: number;
  /**
   * Receives successful replies to requests the caller abandoned (e.g. an aborted CLIENT_INIT):
   * their fds and handles still have to be released (§4.4).
   */
  readonly onOrphanReply?: (reply: AnyReply) => void;
}

export interface SentRequest<K extends CommandId> {
  readonly seq: number;
  /** The encoded frame; send it before calling request() again (seqs must go out in order). */
  readonly frame: Buffer;
  /**
   * Resolves with the err-0 reply; rejects with DaemonError (errno = the negative err), or with
   * the reason given to abandon()/close(). Attach a handler: an unhandled rejection is fatal.
   */
  readonly reply: Promise<ReplyOkOf<K>>;
}

/** Requester side of one connection. */
export class ClientSequencer {
  readonly #pending = new Map<number, Pending>();
  readonly #onOrphanReply: ((reply: AnyReply) => void) | undefined;
  #next: number;
  #closed: Error | undefined;

  constructor(options: ClientSequencerOptions = {}) {
    this.#next = (options.firstSeq ?? 1) >>> 0;
    this.#onOrphanReply = options.onOrphanReply;
    this.#closed = undefined;
  }

  /** Requests still waiting for their reply (abandoned ones included). */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Seq the next request will carry. */
  get nextSeq(): number {
    return this.#next;
  }

  /**
   * Encodes a request with the next seq and registers it. Throws EncodeError (nothing is
   * consumed) if the body cannot be encoded, or the close reason once close() was called.
   */
  request<K extends CommandId>(id: K, body: RequestBodies[K]): SentRequest<K> {
    if (this.#closed) throw this.#closed;
    const seq = this.#next;
    if (this.#pending.has(seq)) {
      // 2^32 requests in flight cannot happen; a seq reused while pending would misroute replies.
      throw new FramingError(WireErrorCode.BAD_SEQ, `seq ${seq} is still pending`);
    }
    const frame = encodeRequest(id, seq, body);
    this.#next = (seq + 1) >>> 0;
    const reply = new Promise<ReplyOkOf<K>>((resolve, reject) => {
      this.#pending.set(seq, {
        id,
        resolve: resolve as (reply: AnyReply) => void,
        reject,
        abandoned: false,
      });
    });
    return { seq, frame, reply };
  }

  /**
   * The caller stopped waiting for `seq`: its promise is rejected with `reason` now, and the
   * reply, when it comes, goes to `onOrphanReply` instead.
   */
  abandon(seq: number, reason: Error): void {
    const p = this.#pending.get(seq);
    if (!p || p.abandoned) return;
    p.abandoned = true;
    p.reject(reason);
  }

  /**
   * Handles one inbound frame. Settles the matching request and returns undefined, or returns
   * the event. Throws a fatal WireError (close the connection, then call close()); returns
   * undefined for an unknown event, which is ignored (§7).
   */
  receive(frame: Frame): AnyEvent | undefined {
    if ((frame.id & EVENT_BIT) === 0) {
      const p = this.#pending.get(frame.seq);
      if (!p) {
        throw new FramingError(
          WireErrorCode.UNEXPECTED_REPLY,
          `reply ${messageName(frame.id)} with seq ${frame.seq} matches no request`,
        ).at(frame.id, frame.seq);
      }
      if (p.id !== frame.id) {
        throw new FramingError(
          WireErrorCode.REPLY_ID_MISMATCH,
          `reply id ${messageName(frame.id)} for seq ${frame.seq}, which was ${messageName(p.id)}`,
        ).at(frame.id, frame.seq);
      }
    }
    const r = decodeInbound(frame);
    if (!r.ok) {
      if (r.error.fatal) throw r.error;
      return undefined;
    }
    const msg = r.value;
    if (msg.kind === 'event') return msg;
    const p = this.#pending.get(msg.seq)!;
    this.#pending.delete(msg.seq);
    if (p.abandoned) {
      if (msg.ok) this.#onOrphanReply?.(msg);
    } else if (msg.ok) {
      p.resolve(msg);
    } else {
      const name = errnoName(msg.err);
      p.reject(new DaemonError(`${messageName(msg.id)} failed: ${name}`, name, msg.err));
    }
    return undefined;
  }

  /** The connection is gone: rejects every pending request with `reason`; later requests throw it. */
  close(reason: Error): void {
    this.#closed ??= reason;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) if (!p.abandoned) p.reject(reason);
  }
}
