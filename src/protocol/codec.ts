/**
 * Encoding and decoding of whole messages, driven by the table in messages.ts
 * (docs/wire-protocol.md §4–§7). Decoders return a result instead of throwing, so callers need
 * no try/catch around a peer's bytes: `error.fatal` says whether to close the connection,
 * `error.replyErr` what to answer. Encoders throw EncodeError (a local bug, nothing sent).
 */
import { type CommandId, EVENT_BIT, type EventId, HEADER_SIZE, MAX_PAYLOAD, REPLY_HEADER_SIZE } from './constants.js';
import { BufferReader } from './buffer-reader.js';
import { BufferWriter } from './buffer-writer.js';
import { EncodeError, FramingError, NotPermittedError, PayloadError, UnknownMessageError, WireError, WireErrorCode } from './errors.js';
import type { Struct } from './fields.js';
import { writeFrameHeader } from './frame.js';
import { commandSpec, eventSpec, messageName } from './messages.js';
import type { RequestSequence } from './sequencer.js';
import type { AnyEvent, AnyReply, AnyRequest, EventBodies, Frame, ReplyBodies, RequestBodies, Transport } from './types.js';

export type DecodeResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: WireError };

// ---------------------------------------------------------------------------------------------
// Encoding

function checkSeq(seq: number): void {
  if (!Number.isInteger(seq) || seq < 0 || seq > 0xffff_ffff) throw new EncodeError(`seq out of range: ${String(seq)}`);
}

function frameWriter(id: number, seq: number, payloadSize: number): BufferWriter {
  if (payloadSize > MAX_PAYLOAD) {
    throw new EncodeError(`${messageName(id)}: payload of ${payloadSize} bytes exceeds MAX_PAYLOAD ${MAX_PAYLOAD}`);
  }
  const w = new BufferWriter(HEADER_SIZE + payloadSize);
  w.u16(id).u16(payloadSize).u32(seq);
  return w;
}

function encodeBody<T>(schema: Struct<T>, body: T, id: number, seq: number, prefix: number): BufferWriter {
  if (typeof body !== 'object' || body === null) throw new EncodeError(`${messageName(id)}: body must be an object`);
  return frameWriter(id, seq, prefix + schema.size(body));
}

/** A request frame (§4.1). Throws EncodeError for an unknown id or a value the wire cannot carry. */
export function encodeRequest<K extends CommandId>(id: K, seq: number, body: RequestBodies[K]): Buffer {
  checkSeq(seq);
  const spec = commandSpec(id);
  if (!spec) throw new EncodeError(`unknown command id ${messageName(id)}`);
  const schema = spec.request as Struct<RequestBodies[K]>;
  const w = encodeBody(schema, body, id, seq, 0);
  schema.write(w, body);
  return w.finish();
}

/**
 * A reply frame (§4.2). With `err` 0 the body is required unless the reply has no fields; with
 * a negative `err` no data follows, and any id may be answered (-ENOSYS repeats unknown ids).
 */
export function encodeReply<K extends CommandId>(id: K, seq: number, err: 0, body: ReplyBodies[K]): Buffer;
export function encodeReply(id: number, seq: number, err: number): Buffer;
export function encodeReply(id: number, seq: number, err: number, body?: unknown): Buffer {
  checkSeq(seq);
  if (!Number.isInteger(id) || id < 0 || id >= EVENT_BIT) throw new EncodeError(`reply id out of range: ${String(id)}`);
  if (!Number.isInteger(err) || err > 0 || err < -0x8000_0000)
    throw new EncodeError(`reply err must be 0 or a negative errno, got ${String(err)}`);
  if (err < 0) {
    if (body !== undefined) throw new EncodeError('an error reply carries no data');
    const w = frameWriter(id, seq, REPLY_HEADER_SIZE);
    w.s32(err).u32(0);
    return w.finish();
  }
  const spec = commandSpec(id);
  if (!spec) throw new EncodeError(`cannot send a success reply for unknown id ${messageName(id)}`);
  const schema = spec.reply as Struct<unknown>;
  const data = body ?? (schema.fixedSize === 0 && !schema.hasArray ? {} : undefined);
  if (data === undefined) throw new EncodeError(`${spec.name}: a success reply needs a body`);
  const w = encodeBody(schema, data, id, seq, REPLY_HEADER_SIZE);
  w.s32(0).u32(0);
  schema.write(w, data);
  return w.finish();
}

/** An event frame (§4.3): seq is always 0. */
export function encodeEvent<K extends EventId>(id: K, body: EventBodies[K]): Buffer {
  const spec = eventSpec(id);
  if (!spec) throw new EncodeError(`unknown event id ${messageName(id)}`);
  const schema = spec.body as Struct<EventBodies[K]>;
  const w = encodeBody(schema, body, id, 0, 0);
  schema.write(w, body);
  return w.finish();
}

/** A frame with an arbitrary id, seq and payload (forwarding, tests). */
export function encodeFrame(id: number, seq: number, payload: Uint8Array): Buffer {
  checkSeq(seq);
  if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new EncodeError(`id out of range: ${String(id)}`);
  if (payload.length > 0xffff) throw new EncodeError(`payload of ${payload.length} bytes does not fit the u16 size field`);
  const buf = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeFrameHeader(buf, id, payload.length, seq);
  buf.set(payload, HEADER_SIZE);
  return buf;
}

/**
 * The reply a responder owes for a non-fatal decode error (§5.2), or undefined when there is
 * none to send (fatal errors: close instead).
 */
export function encodeErrorReply(frame: Frame, error: WireError): Buffer | undefined {
  if (error.fatal || error.replyErr >= 0 || (frame.id & EVENT_BIT) !== 0) return undefined;
  return encodeReply(frame.id, frame.seq, error.replyErr);
}

// ---------------------------------------------------------------------------------------------
// Decoding

function fail<T>(error: WireError, frame: Frame): DecodeResult<T> {
  if (error.id === undefined) error.at(frame.id, frame.seq);
  return { ok: false, error };
}

/**
 * Runs a payload decoder; wire errors become results, payload faults made fatal when `fatal`
 * (replies and events). Anything else is a bug in this directory and propagates.
 */
function decodePayload<T>(frame: Frame, fatal: boolean, fn: () => T): DecodeResult<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof PayloadError && fatal) return fail(e.inReply(), frame);
    if (e instanceof WireError) return fail(e, frame);
    throw e;
  }
}

function readStruct<T>(schema: Struct<T>, r: BufferReader): T {
  const v = schema.read(r);
  r.expectEnd(schema.name);
  return v;
}

export interface RequestDecodeOptions {
  /** The transport the frame came on; commands not allowed there get -EPERM (§3.2). */
  readonly transport?: Transport;
  /** The connection's seq checker; a wrong seq is fatal (§4.1). */
  readonly sequence?: RequestSequence;
  /** The connection's allow mask; commands outside it get -EPERM (§5.2). */
  readonly allowed?: (id: CommandId) => boolean;
}

/**
 * Decodes a request, applying the checks of §5 in the order the spec gives: fatal framing
 * checks first, then -ENOSYS, -EPERM, -EINVAL. The fds stay the caller's to close on failure.
 */
export function decodeRequest(frame: Frame, options: RequestDecodeOptions = {}): DecodeResult<AnyRequest> {
  const { id, seq, fds } = frame;
  if ((id & EVENT_BIT) !== 0) {
    return fail(new FramingError(WireErrorCode.BAD_DIRECTION, `event id ${messageName(id)} sent as a request`), frame);
  }
  if (options.sequence && !options.sequence.accept(seq)) {
    return fail(new FramingError(WireErrorCode.BAD_SEQ, `request seq ${seq}, expected ${String(options.sequence.expected)}`), frame);
  }
  const spec = commandSpec(id);
  const maxFds = spec?.requestFds ?? 0;
  if (fds.length > maxFds) {
    return fail(
      new FramingError(WireErrorCode.FDS_NOT_ALLOWED, `${messageName(id)} request with ${fds.length} fds, at most ${maxFds} allowed`),
      frame,
    );
  }
  if (!spec) return fail(new UnknownMessageError(WireErrorCode.UNKNOWN_ID, `unknown command ${messageName(id)}`), frame);
  if (options.transport !== undefined && !spec.transports.includes(options.transport)) {
    return fail(
      new NotPermittedError(WireErrorCode.WRONG_TRANSPORT, `${spec.name} is not allowed on the ${options.transport} transport`),
      frame,
    );
  }
  if (options.allowed && !options.allowed(spec.id)) {
    return fail(new NotPermittedError(WireErrorCode.NOT_ALLOWED, `${spec.name} is not allowed on this connection`), frame);
  }
  if (fds.length < spec.requestFds) {
    return fail(new PayloadError(WireErrorCode.MISSING_FDS, `${spec.name} request needs ${spec.requestFds} fds, got ${fds.length}`), frame);
  }
  const schema = spec.request as Struct<unknown>;
  return decodePayload(frame, false, () => {
    const body = readStruct(schema, new BufferReader(frame.payload));
    return { kind: 'request', id: spec.id, seq, body, fds } as AnyRequest;
  });
}

export interface ReplyDecodeOptions {
  /** The id of the request this reply answers; another id is fatal (§4.4). */
  readonly expectedId?: number;
}

/** Decodes a reply (§4.2). Every failure is fatal: nobody can be answered about a bad reply. */
export function decodeReply(frame: Frame, options: ReplyDecodeOptions = {}): DecodeResult<AnyReply> {
  const { id, seq, fds, payload } = frame;
  if ((id & EVENT_BIT) !== 0) {
    return fail(new FramingError(WireErrorCode.BAD_DIRECTION, `event id ${messageName(id)} where a reply was expected`), frame);
  }
  if (options.expectedId !== undefined && id !== options.expectedId) {
    return fail(
      new FramingError(WireErrorCode.REPLY_ID_MISMATCH, `reply id ${messageName(id)}, expected ${messageName(options.expectedId)}`),
      frame,
    );
  }
  return decodePayload(frame, true, () => {
    const r = new BufferReader(payload);
    const err = r.s32();
    if (r.u32() !== 0) throw new PayloadError(WireErrorCode.BAD_PADDING, 'non-zero padding after err');
    if (err > 0) throw new FramingError(WireErrorCode.BAD_REPLY_ERR, `reply err ${err} is positive`);
    if (err < 0) {
      r.expectEnd('an error reply');
      if (fds.length > 0) throw new FramingError(WireErrorCode.FDS_NOT_ALLOWED, `error reply with ${fds.length} fds`);
      return { kind: 'reply', ok: false, id, seq, err, body: undefined, fds };
    }
    const spec = commandSpec(id);
    if (!spec) throw new UnknownMessageError(WireErrorCode.UNKNOWN_ID, `success reply for unknown id ${messageName(id)}`, true);
    if (fds.length > spec.replyFds) {
      throw new FramingError(WireErrorCode.FDS_NOT_ALLOWED, `${spec.name} reply with ${fds.length} fds, at most ${spec.replyFds}`);
    }
    if (fds.length < spec.replyFds) {
      throw new PayloadError(WireErrorCode.MISSING_FDS, `${spec.name} reply needs ${spec.replyFds} fds, got ${fds.length}`);
    }
    const body = readStruct(spec.reply as Struct<unknown>, r);
    return { kind: 'reply', ok: true, id: spec.id, seq, err: 0, body, fds } as AnyReply;
  });
}

/** Decodes an event (§4.3). Unknown event ids give a non-fatal UNKNOWN_EVENT (ignore it). */
export function decodeEvent(frame: Frame): DecodeResult<AnyEvent> {
  const { id, seq, fds } = frame;
  if ((id & EVENT_BIT) === 0) {
    return fail(new FramingError(WireErrorCode.BAD_DIRECTION, `id ${messageName(id)} is not an event`), frame);
  }
  if (seq !== 0) return fail(new FramingError(WireErrorCode.BAD_SEQ, `event seq ${seq}, must be 0`), frame);
  if (fds.length > 0) return fail(new FramingError(WireErrorCode.FDS_NOT_ALLOWED, `event with ${fds.length} fds`), frame);
  const spec = eventSpec(id);
  if (!spec) return fail(new UnknownMessageError(WireErrorCode.UNKNOWN_EVENT, `unknown event ${messageName(id)}`), frame);
  const schema = spec.body as Struct<unknown>;
  return decodePayload(frame, true, () => {
    const body = readStruct(schema, new BufferReader(frame.payload));
    return { kind: 'event', id: spec.id, seq: 0, body } as AnyEvent;
  });
}

/** Requester side: a frame from the responder is an event if bit 15 is set, else a reply. */
export function decodeInbound(frame: Frame, options: ReplyDecodeOptions = {}): DecodeResult<AnyReply | AnyEvent> {
  return (frame.id & EVENT_BIT) !== 0 ? decodeEvent(frame) : decodeReply(frame, options);
}
