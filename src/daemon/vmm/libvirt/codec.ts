/**
 * The wire format of libvirt's remote protocol (docs/vms-libvirt.md §"The remote protocol"),
 * only the part kvmchand uses. Every message on the UNIX stream socket is
 *
 *   u32 length (of the whole message, this word included)
 *   header: u32 program, u32 version, i32 procedure, i32 type, u32 serial, i32 status
 *   payload: XDR (RFC 4506) — big-endian 4-byte words, strings and opaques as a u32 length,
 *            the bytes and zero padding to a multiple of 4; an optional value ("pointer") is a
 *            u32 0/1 followed by the value when 1.
 *
 * A CALL from us gets a REPLY with the same procedure and serial; status OK carries the
 * procedure's return struct, status ERROR a `remote_error`. The server also sends MESSAGEs
 * (domain events, keepalive pings) with serial 0.
 *
 * Everything read is untrusted: the reader checks every length against what is left and
 * against the protocol's maximum, and a decoder must consume its payload exactly.
 */
import { KvmchanError, type KvmchanErrorCode } from '../../../errors.js';

export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_PROTOCOL_VERSION = 1;
/** libvirt's keepalive program ("keep") and its two procedures. */
export const KEEPALIVE_PROGRAM = 0x6b656570;
export const KEEPALIVE_PROC_PING = 1;
export const KEEPALIVE_PROC_PONG = 2;

/** Procedure numbers of remote_protocol.x's `remote_procedure` that kvmchand uses. */
export const Proc = {
  CONNECT_OPEN: 1,
  CONNECT_CLOSE: 2,
  DOMAIN_GET_XML_DESC: 14,
  DOMAIN_LOOKUP_BY_UUID: 24,
  AUTH_LIST: 66,
  AUTH_POLKIT: 70,
  DOMAIN_ATTACH_DEVICE_FLAGS: 160,
  CONNECT_LIST_ALL_DOMAINS: 273,
  CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY: 316,
  CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY: 317,
  DOMAIN_EVENT_CALLBACK_LIFECYCLE: 318,
  DOMAIN_EVENT_CALLBACK_DEVICE_REMOVED: 333,
} as const;

export const MessageType = { CALL: 0, REPLY: 1, MESSAGE: 2, STREAM: 3, CALL_WITH_FDS: 4, REPLY_WITH_FDS: 5 } as const;
export const MessageStatus = { OK: 0, ERROR: 1, CONTINUE: 2 } as const;

/** virDomainEventID values we register for. */
export const EventId = { LIFECYCLE: 0, DEVICE_REMOVED: 15 } as const;
/** virDomainEventType (the `event` of a lifecycle event). */
export const LifecycleEvent = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;

/** virConnectListAllDomainsFlags: ACTIVE. */
export const LIST_DOMAINS_ACTIVE = 1;
/** virDomainDeviceModifyFlags: LIVE. */
export const AFFECT_LIVE = 1;

/** Largest message (VIR_NET_MESSAGE_MAX) plus the length word. */
export const MAX_MESSAGE = 33554432 + 4;
export const HEADER_SIZE = 24;
/** Longest string accepted (REMOTE_STRING_MAX in current libvirt). */
export const MAX_STRING = 4194304;
/** Most domains in a list (REMOTE_DOMAIN_LIST_MAX). */
export const MAX_DOMAIN_LIST = 16384;
export const UUID_LEN = 16;

/** The peer broke the protocol (malformed, over-long, unexpected message). */
export class LibvirtProtocolError extends KvmchanError {
  constructor(message: string, code: KvmchanErrorCode = 'KVMCHAN_E_LIBVIRT_PROTOCOL') {
    super(message, code);
    this.name = 'LibvirtProtocolError';
  }
}

/** libvirt answered a call with an error (its virErrorNumber `code`, virErrorDomain `domain`). */
export class LibvirtCallError extends KvmchanError {
  readonly libvirtCode: number;
  readonly libvirtDomain: number;
  readonly procedure: number;
  constructor(procedure: number, err: RemoteError) {
    super(`libvirt procedure ${procedure}: ${err.message ?? '(no message)'} (code ${err.code})`, 'KVMCHAN_E_LIBVIRT_CALL');
    this.name = 'LibvirtCallError';
    this.libvirtCode = err.code;
    this.libvirtDomain = err.domain;
    this.procedure = procedure;
  }
}

/** virErrorNumber values the backend tells apart. */
export const VirErr = { NO_DOMAIN: 42, OPERATION_INVALID: 55 } as const;

export interface Header {
  program: number;
  version: number;
  procedure: number;
  type: number;
  serial: number;
  status: number;
}

export interface RemoteDomain {
  name: string;
  uuid: Buffer;
  /** libvirt's runtime id (-1 when not running). */
  id: number;
}

export interface RemoteError {
  code: number;
  domain: number;
  message: string | null;
  level: number;
}

export class XdrWriter {
  #chunks: Buffer[] = [];
  #len = 0;

  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    return this.#push(b);
  }

  i32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32BE(v | 0);
    return this.#push(b);
  }

  /** Fixed-length opaque (no length word), padded. */
  fixedOpaque(b: Buffer, n: number): this {
    if (b.length !== n) throw new LibvirtProtocolError(`fixed opaque needs ${n} bytes, got ${b.length}`, 'KVMCHAN_E_INVALID_ARG');
    this.#push(b);
    return this.#pad(n);
  }

  string(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > MAX_STRING) throw new LibvirtProtocolError('string too long', 'KVMCHAN_E_INVALID_ARG');
    this.u32(b.length);
    this.#push(b);
    return this.#pad(b.length);
  }

  optString(s: string | null): this {
    if (s === null) return this.u32(0);
    return this.u32(1).string(s);
  }

  domain(d: RemoteDomain): this {
    return this.string(d.name).fixedOpaque(d.uuid, UUID_LEN).i32(d.id);
  }

  optDomain(d: RemoteDomain | null): this {
    if (d === null) return this.u32(0);
    return this.u32(1).domain(d);
  }

  build(): Buffer {
    return Buffer.concat(this.#chunks, this.#len);
  }

  #pad(n: number): this {
    const p = (4 - (n % 4)) % 4;
    return p > 0 ? this.#push(Buffer.alloc(p)) : this;
  }

  #push(b: Buffer): this {
    this.#chunks.push(b);
    this.#len += b.length;
    return this;
  }
}

export class XdrReader {
  readonly #buf: Buffer;
  #off = 0;
  readonly #what: string;

  constructor(buf: Buffer, what: string) {
    this.#buf = buf;
    this.#what = what;
  }

  get remaining(): number {
    return this.#buf.length - this.#off;
  }

  u32(): number {
    this.#need(4);
    const v = this.#buf.readUInt32BE(this.#off);
    this.#off += 4;
    return v;
  }

  i32(): number {
    this.#need(4);
    const v = this.#buf.readInt32BE(this.#off);
    this.#off += 4;
    return v;
  }

  bool(): boolean {
    const v = this.u32();
    if (v > 1) throw this.#err(`boolean/pointer word ${v}`);
    return v === 1;
  }

  fixedOpaque(n: number): Buffer {
    const padded = n + ((4 - (n % 4)) % 4);
    this.#need(padded);
    const out = Buffer.from(this.#buf.subarray(this.#off, this.#off + n));
    this.#checkPad(this.#off + n, this.#off + padded);
    this.#off += padded;
    return out;
  }

  string(max = MAX_STRING): string {
    const n = this.u32();
    if (n > max) throw this.#err(`string of ${n} bytes exceeds ${max}`);
    const b = this.fixedOpaque(n);
    const s = b.toString('utf8');
    if (!Buffer.from(s, 'utf8').equals(b)) throw this.#err('string is not valid UTF-8');
    return s;
  }

  optString(max = MAX_STRING): string | null {
    return this.bool() ? this.string(max) : null;
  }

  domain(): RemoteDomain {
    const name = this.string(4096);
    const uuid = this.fixedOpaque(UUID_LEN);
    const id = this.i32();
    return { name, uuid, id };
  }

  optDomain(): RemoteDomain | null {
    return this.bool() ? this.domain() : null;
  }

  /** The payload must be fully consumed. */
  end(): void {
    if (this.remaining !== 0) throw this.#err(`${this.remaining} trailing bytes`);
  }

  #checkPad(from: number, to: number): void {
    for (let i = from; i < to; i++) if (this.#buf[i] !== 0) throw this.#err('non-zero XDR padding');
  }

  #need(n: number): void {
    if (this.remaining < n) throw this.#err(`truncated: needs ${n} bytes, ${this.remaining} left`);
  }

  #err(why: string): LibvirtProtocolError {
    return new LibvirtProtocolError(`${this.#what}: ${why}`);
  }
}

// --- framing ---------------------------------------------------------------------------------

export function encodeMessage(h: Header, payload: Buffer = Buffer.alloc(0)): Buffer {
  const total = 4 + HEADER_SIZE + payload.length;
  if (total > MAX_MESSAGE) throw new LibvirtProtocolError(`message of ${total} bytes too large`, 'KVMCHAN_E_INVALID_ARG');
  const b = Buffer.alloc(4 + HEADER_SIZE);
  b.writeUInt32BE(total, 0);
  b.writeUInt32BE(h.program >>> 0, 4);
  b.writeUInt32BE(h.version >>> 0, 8);
  b.writeInt32BE(h.procedure | 0, 12);
  b.writeInt32BE(h.type | 0, 16);
  b.writeUInt32BE(h.serial >>> 0, 20);
  b.writeInt32BE(h.status | 0, 24);
  return Buffer.concat([b, payload]);
}

export function encodeCall(procedure: number, serial: number, payload?: Buffer): Buffer {
  return encodeMessage(
    { program: REMOTE_PROGRAM, version: REMOTE_PROTOCOL_VERSION, procedure, type: MessageType.CALL, serial, status: MessageStatus.OK },
    payload,
  );
}

export interface Message {
  header: Header;
  payload: Buffer;
}

/** Splits a byte stream into messages; a bad length word is a protocol error. */
export class FrameDecoder {
  #buf: Buffer = Buffer.alloc(0);
  readonly #max: number;

  constructor(max = MAX_MESSAGE) {
    this.#max = max;
  }

  push(chunk: Buffer): Message[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: Message[] = [];
    for (;;) {
      if (this.#buf.length < 4) break;
      const len = this.#buf.readUInt32BE(0);
      if (len < 4 + HEADER_SIZE) throw new LibvirtProtocolError(`message length ${len} shorter than a header`);
      if (len > this.#max) throw new LibvirtProtocolError(`message length ${len} exceeds ${this.#max}`);
      if (this.#buf.length < len) break;
      const m = this.#buf.subarray(0, len);
      this.#buf = this.#buf.subarray(len);
      out.push({
        header: {
          program: m.readUInt32BE(4),
          version: m.readUInt32BE(8),
          procedure: m.readInt32BE(12),
          type: m.readInt32BE(16),
          serial: m.readUInt32BE(20),
          status: m.readInt32BE(24),
        },
        payload: Buffer.from(m.subarray(4 + HEADER_SIZE)),
      });
    }
    return out;
  }

  get buffered(): number {
    return this.#buf.length;
  }
}

// --- procedure arguments and results --------------------------------------------------------

export function encodeOpenArgs(uri: string | null, flags = 0): Buffer {
  return new XdrWriter().optString(uri).u32(flags).build();
}

/** remote_auth_type. */
export const AuthType = { NONE: 0, SASL: 1, POLKIT: 2 } as const;
/** REMOTE_AUTH_TYPE_LIST_MAX. */
export const MAX_AUTH_TYPES = 20;

export function decodeAuthListRet(p: Buffer): number[] {
  const r = new XdrReader(p, 'AUTH_LIST reply');
  const n = r.u32();
  if (n > MAX_AUTH_TYPES) throw new LibvirtProtocolError(`AUTH_LIST reply: ${n} auth types exceed ${MAX_AUTH_TYPES}`);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(r.i32());
  r.end();
  return out;
}

export function decodeAuthPolkitRet(p: Buffer): boolean {
  const r = new XdrReader(p, 'AUTH_POLKIT reply');
  const complete = r.i32();
  r.end();
  return complete !== 0;
}

export function encodeListAllDomainsArgs(flags: number): Buffer {
  return new XdrWriter().i32(1).u32(flags).build();
}

export function decodeListAllDomainsRet(p: Buffer): RemoteDomain[] {
  const r = new XdrReader(p, 'CONNECT_LIST_ALL_DOMAINS reply');
  const n = r.u32();
  if (n > MAX_DOMAIN_LIST) throw new LibvirtProtocolError(`CONNECT_LIST_ALL_DOMAINS reply: ${n} domains exceed ${MAX_DOMAIN_LIST}`);
  const out: RemoteDomain[] = [];
  for (let i = 0; i < n; i++) out.push(r.domain());
  r.u32(); // ret: the count again
  r.end();
  return out;
}

export function encodeGetXmlDescArgs(d: RemoteDomain, flags = 0): Buffer {
  return new XdrWriter().domain(d).u32(flags).build();
}

export function decodeStringRet(p: Buffer, what: string): string {
  const r = new XdrReader(p, what);
  const s = r.string();
  r.end();
  return s;
}

export function encodeAttachDeviceFlagsArgs(d: RemoteDomain, xml: string, flags: number): Buffer {
  return new XdrWriter().domain(d).string(xml).u32(flags).build();
}

export function encodeLookupByUuidArgs(uuid: Buffer): Buffer {
  return new XdrWriter().fixedOpaque(uuid, UUID_LEN).build();
}

export function decodeDomainRet(p: Buffer, what: string): RemoteDomain {
  const r = new XdrReader(p, what);
  const d = r.domain();
  r.end();
  return d;
}

export function encodeRegisterAnyArgs(eventId: number, dom: RemoteDomain | null): Buffer {
  return new XdrWriter().i32(eventId).optDomain(dom).build();
}

export function decodeRegisterAnyRet(p: Buffer): number {
  const r = new XdrReader(p, 'DOMAIN_EVENT_CALLBACK_REGISTER_ANY reply');
  const id = r.i32();
  r.end();
  return id;
}

export function decodeEmpty(p: Buffer, what: string): void {
  new XdrReader(p, what).end();
}

/** `remote_error`: the fields after `level` are read (and bounded) but not kept. */
export function decodeError(p: Buffer): RemoteError {
  const r = new XdrReader(p, 'error reply');
  const code = r.i32();
  const domain = r.i32();
  const message = r.optString(65536);
  const level = r.i32();
  r.optDomain();
  r.optString(65536);
  r.optString(65536);
  r.optString(65536);
  r.i32();
  r.i32();
  if (r.bool()) {
    r.string(4096); // network name
    r.fixedOpaque(UUID_LEN);
  }
  r.end();
  return { code, domain, message, level };
}

export interface LifecycleMsg {
  callbackId: number;
  dom: RemoteDomain;
  event: number;
  detail: number;
}

export function decodeLifecycleMsg(p: Buffer): LifecycleMsg {
  const r = new XdrReader(p, 'lifecycle event');
  const callbackId = r.i32();
  const dom = r.domain();
  const event = r.i32();
  const detail = r.i32();
  r.end();
  return { callbackId, dom, event, detail };
}

export interface DeviceRemovedMsg {
  callbackId: number;
  dom: RemoteDomain;
  alias: string;
}

export function decodeDeviceRemovedMsg(p: Buffer): DeviceRemovedMsg {
  const r = new XdrReader(p, 'device-removed event');
  const callbackId = r.i32();
  const dom = r.domain();
  const alias = r.string(4096);
  r.end();
  return { callbackId, dom, alias };
}

/** 16 raw bytes → the canonical 8-4-4-4-12 text form. */
export function uuidString(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function uuidBytes(s: string): Buffer {
  const h = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) throw new LibvirtProtocolError(`not a UUID: ${s}`, 'KVMCHAN_E_INVALID_ARG');
  return Buffer.from(h, 'hex');
}
