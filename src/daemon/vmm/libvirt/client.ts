/**
 * A small client of libvirt's remote protocol over its UNIX socket (codec.ts has the wire
 * format; docs/vms-libvirt.md §"The remote protocol"). One connection, calls in flight matched by
 * serial, each with a timeout; domain events and keepalive pings arrive as MESSAGEs. Anything
 * that breaks the protocol (a malformed or unexpected message, a reply to no call) ends the
 * connection: every pending call is rejected and `close` is emitted once.
 *
 * We never advertise keepalive support, so libvirtd does not ping us; a ping is answered anyway.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { TimeoutError } from '../../../errors.js';
import {
  AFFECT_LIVE,
  AuthType,
  decodeAuthListRet,
  decodeAuthPolkitRet,
  FrameDecoder,
  KEEPALIVE_PROC_PING,
  KEEPALIVE_PROC_PONG,
  KEEPALIVE_PROGRAM,
  LIST_DOMAINS_ACTIVE,
  LibvirtCallError,
  LibvirtProtocolError,
  MessageStatus,
  MessageType,
  Proc,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  decodeDeviceRemovedMsg,
  decodeDomainRet,
  decodeEmpty,
  decodeError,
  decodeLifecycleMsg,
  decodeListAllDomainsRet,
  decodeRegisterAnyRet,
  decodeStringRet,
  encodeAttachDeviceFlagsArgs,
  encodeCall,
  encodeGetXmlDescArgs,
  encodeListAllDomainsArgs,
  encodeLookupByUuidArgs,
  encodeMessage,
  encodeOpenArgs,
  encodeRegisterAnyArgs,
  type DeviceRemovedMsg,
  type LifecycleMsg,
  type Message,
  type RemoteDomain,
} from './codec.js';

export interface LibvirtClientOptions {
  /** Timeout of each call. Default 10 s. */
  callTimeoutMs?: number;
  /** Connecting to the socket. Default 5 s. */
  connectTimeoutMs?: number;
  /** Most calls in flight at once. Default 64. */
  maxPending?: number;
}

export interface LibvirtClientEvents {
  lifecycle: [msg: LifecycleMsg];
  'device-removed': [msg: DeviceRemovedMsg];
  /** The connection ended (EOF, error, protocol violation or close()); emitted once. */
  close: [reason: LibvirtProtocolError];
}

interface Pending {
  procedure: number;
  resolve: (p: Buffer) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class LibvirtClient extends EventEmitter<LibvirtClientEvents> {
  readonly socketPath: string;
  readonly #sock: net.Socket;
  readonly #decoder = new FrameDecoder();
  readonly #pending = new Map<number, Pending>();
  readonly #callTimeoutMs: number;
  readonly #maxPending: number;
  /** Serials of calls that timed out: their late replies are dropped, not violations. */
  readonly #late = new Set<number>();
  #serial = 1;
  #closed = false;

  private constructor(socketPath: string, sock: net.Socket, opts: LibvirtClientOptions) {
    super();
    this.socketPath = socketPath;
    this.#sock = sock;
    this.#callTimeoutMs = opts.callTimeoutMs ?? 10_000;
    this.#maxPending = opts.maxPending ?? 64;
    sock.on('data', (chunk: Buffer) => {
      let msgs: Message[];
      try {
        msgs = this.#decoder.push(chunk);
      } catch (err) {
        this.#end(err as LibvirtProtocolError);
        return;
      }
      for (const m of msgs) {
        if (this.#closed) return;
        try {
          this.#dispatch(m);
        } catch (err) {
          this.#end(err instanceof LibvirtProtocolError ? err : new LibvirtProtocolError((err as Error).message));
          return;
        }
      }
    });
    sock.on('error', (err) => {
      this.#end(new LibvirtProtocolError(`libvirt socket: ${err.message}`, 'KVMCHAN_E_LIBVIRT_CLOSED'));
    });
    sock.on('close', () => {
      this.#end(new LibvirtProtocolError('libvirt closed the connection', 'KVMCHAN_E_LIBVIRT_CLOSED'));
    });
  }

  /** Connect to `socketPath` (no call made yet: call open() next). */
  static connect(socketPath: string, opts: LibvirtClientOptions = {}): Promise<LibvirtClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new LibvirtProtocolError(`connecting to ${socketPath} timed out`, 'KVMCHAN_E_LIBVIRT_CONNECT'));
      }, opts.connectTimeoutMs ?? 5000);
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(new LibvirtProtocolError(`cannot connect to libvirt at ${socketPath}: ${err.message}`, 'KVMCHAN_E_LIBVIRT_CONNECT'));
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new LibvirtClient(socketPath, sock, opts));
      });
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Send a CALL and resolve with the OK reply's payload; an ERROR reply rejects with LibvirtCallError. */
  call(procedure: number, payload?: Buffer, timeoutMs = this.#callTimeoutMs): Promise<Buffer> {
    if (this.#closed) return Promise.reject(new LibvirtProtocolError('libvirt connection is closed', 'KVMCHAN_E_LIBVIRT_CLOSED'));
    if (this.#pending.size >= this.#maxPending)
      return Promise.reject(new LibvirtProtocolError('too many libvirt calls in flight', 'KVMCHAN_E_LIBVIRT_BUSY'));
    const serial = this.#serial;
    this.#serial = (this.#serial + 1) >>> 0 || 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(serial);
        this.#late.add(serial);
        if (this.#late.size > 256) this.#late.delete(this.#late.values().next().value!);
        reject(new TimeoutError(`libvirt procedure ${procedure} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(serial, { procedure, resolve, reject, timer });
      this.#sock.write(encodeCall(procedure, serial, payload));
    });
  }

  /**
   * Authenticate the connection (before open): AUTH_LIST, then AUTH_POLKIT when the socket asks
   * for polkit (libvirtd lets root through; others need a polkit rule). SASL is not supported.
   */
  async authenticate(): Promise<void> {
    const types = decodeAuthListRet(await this.call(Proc.AUTH_LIST));
    if (types.length === 0 || types.includes(AuthType.NONE)) return;
    if (types.includes(AuthType.POLKIT)) {
      if (!decodeAuthPolkitRet(await this.call(Proc.AUTH_POLKIT)))
        throw new LibvirtProtocolError('libvirt polkit authentication did not complete', 'KVMCHAN_E_LIBVIRT_AUTH');
      return;
    }
    throw new LibvirtProtocolError(
      `libvirt asks for authentication kvmchand does not support (types ${types.join(', ')}; SASL is not implemented)`,
      'KVMCHAN_E_LIBVIRT_AUTH',
    );
  }

  async open(uri: string | null): Promise<void> {
    decodeEmpty(await this.call(Proc.CONNECT_OPEN, encodeOpenArgs(uri, 0)), 'CONNECT_OPEN reply');
  }

  async listActiveDomains(): Promise<RemoteDomain[]> {
    return decodeListAllDomainsRet(await this.call(Proc.CONNECT_LIST_ALL_DOMAINS, encodeListAllDomainsArgs(LIST_DOMAINS_ACTIVE)));
  }

  async domainXml(dom: RemoteDomain, flags = 0): Promise<string> {
    return decodeStringRet(await this.call(Proc.DOMAIN_GET_XML_DESC, encodeGetXmlDescArgs(dom, flags)), 'DOMAIN_GET_XML_DESC reply');
  }

  async lookupByUuid(uuid: Buffer): Promise<RemoteDomain> {
    return decodeDomainRet(await this.call(Proc.DOMAIN_LOOKUP_BY_UUID, encodeLookupByUuidArgs(uuid)), 'DOMAIN_LOOKUP_BY_UUID reply');
  }

  /** Attach a device to the running domain only (VIR_DOMAIN_AFFECT_LIVE). */
  async attachDeviceLive(dom: RemoteDomain, xml: string): Promise<void> {
    decodeEmpty(
      await this.call(Proc.DOMAIN_ATTACH_DEVICE_FLAGS, encodeAttachDeviceFlagsArgs(dom, xml, AFFECT_LIVE)),
      'DOMAIN_ATTACH_DEVICE_FLAGS reply',
    );
  }

  /** Register for an event of every domain; returns libvirt's callback id. */
  async registerEvent(eventId: number): Promise<number> {
    return decodeRegisterAnyRet(await this.call(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, encodeRegisterAnyArgs(eventId, null)));
  }

  /** CONNECT_CLOSE (bounded wait), then end the socket. */
  async close(timeoutMs = 1000): Promise<void> {
    if (this.#closed) return;
    try {
      await this.call(Proc.CONNECT_CLOSE, undefined, timeoutMs);
    } catch {
      // closing anyway
    }
    this.destroy();
  }

  /** End the connection now. */
  destroy(): void {
    this.#end(new LibvirtProtocolError('closed by kvmchand', 'KVMCHAN_E_LIBVIRT_CLOSED'));
  }

  #dispatch(m: Message): void {
    const h = m.header;
    if (h.program === KEEPALIVE_PROGRAM) {
      if (h.version !== 1 || h.type !== MessageType.MESSAGE) throw new LibvirtProtocolError(`unexpected keepalive message type ${h.type}`);
      if (h.procedure === KEEPALIVE_PROC_PING) {
        this.#sock.write(
          encodeMessage({
            program: KEEPALIVE_PROGRAM,
            version: 1,
            procedure: KEEPALIVE_PROC_PONG,
            type: MessageType.MESSAGE,
            serial: 0,
            status: MessageStatus.OK,
          }),
        );
      }
      return;
    }
    if (h.program !== REMOTE_PROGRAM) throw new LibvirtProtocolError(`message of unknown program 0x${h.program.toString(16)}`);
    if (h.version !== REMOTE_PROTOCOL_VERSION) throw new LibvirtProtocolError(`message of protocol version ${h.version}`);
    if (h.type === MessageType.MESSAGE) {
      if (h.status !== MessageStatus.OK) throw new LibvirtProtocolError(`event with status ${h.status}`);
      if (h.procedure === Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE) this.emit('lifecycle', decodeLifecycleMsg(m.payload));
      else if (h.procedure === Proc.DOMAIN_EVENT_CALLBACK_DEVICE_REMOVED) this.emit('device-removed', decodeDeviceRemovedMsg(m.payload));
      // Other events (never registered for) are ignored.
      return;
    }
    if (h.type !== MessageType.REPLY) throw new LibvirtProtocolError(`unexpected message type ${h.type}`);
    const p = this.#pending.get(h.serial);
    if (p === undefined) {
      if (this.#late.delete(h.serial)) return;
      throw new LibvirtProtocolError(`reply with serial ${h.serial} to no call`);
    }
    if (h.procedure !== p.procedure) throw new LibvirtProtocolError(`reply for procedure ${h.procedure} to a call of ${p.procedure}`);
    this.#pending.delete(h.serial);
    clearTimeout(p.timer);
    if (h.status === MessageStatus.OK) {
      p.resolve(m.payload);
      return;
    }
    let err: Error;
    try {
      if (h.status !== MessageStatus.ERROR) throw new LibvirtProtocolError(`reply status ${h.status}`);
      err = new LibvirtCallError(h.procedure, decodeError(m.payload));
    } catch (e) {
      p.reject(e as Error);
      throw e;
    }
    p.reject(err);
  }

  #end(reason: LibvirtProtocolError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sock.destroy();
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.#pending.clear();
    this.emit('close', reason);
  }
}
