/** The kvmchan wire protocol (docs/wire-protocol.md): framing, message table, codecs. */
export * from './constants.js';
export * from './errors.js';
export * from './types.js';
export { BufferReader } from './buffer-reader.js';
export { BufferWriter } from './buffer-writer.js';
export type { Empty, Field, FieldInfo, Struct } from './fields.js';
export {
  COMMANDS,
  EVENTS,
  DOMAIN_ENTRY,
  VCHAN_ENTRY,
  VCHAN_INFO,
  MAX_DOMAIN_ENTRIES,
  MAX_VCHAN_ENTRIES,
  commandSpec,
  eventSpec,
  isCommandId,
  isEventId,
  messageName,
  type CommandSpec,
  type EventSpec,
} from './messages.js';
export { decodeDatagram, decodeFrameHeader, writeFrameHeader, type DatagramInfo, type FrameHeader } from './frame.js';
export {
  decodeEvent,
  decodeInbound,
  decodeReply,
  decodeRequest,
  encodeErrorReply,
  encodeEvent,
  encodeFrame,
  encodeReply,
  encodeRequest,
  type DecodeResult,
  type ReplyDecodeOptions,
  type RequestDecodeOptions,
} from './codec.js';
export { FrameDecoder, type FrameDecoderOptions } from './frame-decoder.js';
export { ClientSequencer, RequestSequence, type ClientSequencerOptions, type SentRequest } from './sequencer.js';
export { AllowMask, DEFAULT_COMMANDS, TRANSPORT_OF, checkCommand, type ConnectionKind } from './allow-mask.js';
