/**
 * Wire-protocol errors (docs/wire-protocol.md §5). Each failure has a stable `code`; `fatal`
 * says whether the connection must be closed, and `replyErr` is the negative errno a daemon
 * answers with when the error is not fatal and concerns a request (0: send no reply).
 */
import { ProtocolError } from '../errors.js';
import { Errno } from './constants.js';

export const WireErrorCode = {
  /** Fewer than 8 bytes in a datagram, or a stream that ended inside a frame. */
  FRAME_SHORT: 'KVMCHAN_E_FRAME_SHORT',
  /** Header `size` is not the number of payload bytes in the datagram. */
  FRAME_SIZE_MISMATCH: 'KVMCHAN_E_FRAME_SIZE_MISMATCH',
  /** Header `size` exceeds MAX_PAYLOAD. */
  FRAME_OVERSIZE: 'KVMCHAN_E_FRAME_OVERSIZE',
  /** recvmsg reported MSG_TRUNC: the datagram did not fit the receive buffer. */
  FRAME_TRUNCATED: 'KVMCHAN_E_FRAME_TRUNCATED',
  /** recvmsg reported MSG_CTRUNC: ancillary data (fds) was cut. */
  CONTROL_TRUNCATED: 'KVMCHAN_E_CONTROL_TRUNCATED',
  /** A request seq that is not previous+1, or an event whose seq is not 0. */
  BAD_SEQ: 'KVMCHAN_E_BAD_SEQ',
  /** An event id (bit 15 set) sent on the request direction. */
  BAD_DIRECTION: 'KVMCHAN_E_BAD_DIRECTION',
  /** fds attached where the table allows none, or more than it allows. */
  FDS_NOT_ALLOWED: 'KVMCHAN_E_FDS_NOT_ALLOWED',
  /** Fewer fds than the table requires. */
  MISSING_FDS: 'KVMCHAN_E_MISSING_FDS',
  /** A reply whose seq matches no outstanding request. */
  UNEXPECTED_REPLY: 'KVMCHAN_E_UNEXPECTED_REPLY',
  /** A reply whose id differs from the id of the request with that seq. */
  REPLY_ID_MISMATCH: 'KVMCHAN_E_REPLY_ID_MISMATCH',
  /** A reply whose err is positive. */
  BAD_REPLY_ERR: 'KVMCHAN_E_BAD_REPLY_ERR',
  /** Payload length wrong for the id (including a list whose count does not fit). */
  BAD_LENGTH: 'KVMCHAN_E_BAD_LENGTH',
  /** A padding or reserved field is not zero. */
  BAD_PADDING: 'KVMCHAN_E_BAD_PADDING',
  /** An enumerated field holds a value outside its set. */
  BAD_ENUM: 'KVMCHAN_E_BAD_ENUM',
  /** A flags field has bits set that are not defined. */
  BAD_FLAGS: 'KVMCHAN_E_BAD_FLAGS',
  /** A fixed string is not valid UTF-8, lacks its NUL, or has bytes after the NUL. */
  BAD_STRING: 'KVMCHAN_E_BAD_STRING',
  /** A u64 above 2^53-1. */
  BAD_RANGE: 'KVMCHAN_E_BAD_RANGE',
  /** A request id that is not in the table (answered with -ENOSYS). */
  UNKNOWN_ID: 'KVMCHAN_E_UNKNOWN_ID',
  /** An event id this side does not know (ignored, not fatal). */
  UNKNOWN_EVENT: 'KVMCHAN_E_UNKNOWN_EVENT',
  /** The command is not allowed on this transport (answered with -EPERM). */
  WRONG_TRANSPORT: 'KVMCHAN_E_WRONG_TRANSPORT',
  /** The command is not in this connection's allow mask (answered with -EPERM). */
  NOT_ALLOWED: 'KVMCHAN_E_NOT_ALLOWED',
  /** The encoder was given a value the wire cannot carry (a local programming error). */
  ENCODE: 'KVMCHAN_E_ENCODE',
} as const;
export type WireErrorCode = (typeof WireErrorCode)[keyof typeof WireErrorCode];

/** Base of every error this directory raises or returns. */
export class WireError extends ProtocolError {
  declare readonly code: WireErrorCode;
  /** Close the connection (true), or answer/ignore and carry on (false). */
  readonly fatal: boolean;
  /** Negative errno for the reply to a request when not fatal; 0 when no reply is due. */
  readonly replyErr: number;
  /** Header of the offending frame, when one was decoded (lets a daemon address its reply). */
  id: number | undefined;
  seq: number | undefined;

  constructor(code: WireErrorCode, message: string, fatal: boolean, replyErr: number, captureStack = false) {
    // Errors about a peer's bytes are data, not bugs: their stack would only show the codec, and
    // capturing it is most of their cost — which a peer flooding bad requests controls (§5.2).
    const limit = Error.stackTraceLimit;
    if (!captureStack) Error.stackTraceLimit = 0;
    super(message, code);
    Error.stackTraceLimit = limit;
    this.name = 'WireError';
    this.fatal = fatal;
    this.replyErr = replyErr;
    this.id = undefined;
    this.seq = undefined;
  }

  /** Records the header of the frame the error is about; returns `this`. */
  at(id: number, seq: number): this {
    this.id = id;
    this.seq = seq;
    return this;
  }
}

/** The byte stream or datagram cannot be trusted any more: close the connection (§5.1). */
export class FramingError extends WireError {
  constructor(code: WireErrorCode, message: string) {
    super(code, message, true, 0);
    this.name = 'FramingError';
  }
}

/**
 * A well-framed message whose payload does not decode (§5.2). In a request this is answered
 * with -EINVAL and the connection stays up; in a reply or event it is fatal (see `inReply`).
 */
export class PayloadError extends WireError {
  constructor(code: WireErrorCode, message: string, fatal = false) {
    super(code, message, fatal, fatal ? 0 : -Errno.EINVAL);
    this.name = 'PayloadError';
  }

  /** The same fault seen in a reply or event, where nobody can be answered: fatal. */
  inReply(): PayloadError {
    if (this.fatal) return this;
    const e = new PayloadError(this.code, this.message, true);
    if (this.id !== undefined && this.seq !== undefined) e.at(this.id, this.seq);
    return e;
  }
}

/** A request id the table does not know (-ENOSYS), or an unknown event (ignored). */
export class UnknownMessageError extends WireError {
  constructor(code: typeof WireErrorCode.UNKNOWN_ID | typeof WireErrorCode.UNKNOWN_EVENT, message: string, fatal = false) {
    super(code, message, fatal, code === WireErrorCode.UNKNOWN_ID && !fatal ? -Errno.ENOSYS : 0);
    this.name = 'UnknownMessageError';
  }
}

/** The command exists but this connection may not use it (-EPERM, §5.2). */
export class NotPermittedError extends WireError {
  constructor(code: typeof WireErrorCode.WRONG_TRANSPORT | typeof WireErrorCode.NOT_ALLOWED, message: string) {
    super(code, message, false, -Errno.EPERM);
    this.name = 'NotPermittedError';
  }
}

/** The caller asked the encoder for something the wire cannot carry. Nothing was sent. */
export class EncodeError extends WireError {
  constructor(message: string) {
    // A local programming error: keep the stack, it points at the caller.
    super(WireErrorCode.ENCODE, message, false, 0, true);
    this.name = 'EncodeError';
  }
}
