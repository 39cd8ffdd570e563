/**
 * A QMP client (QEMU Machine Protocol, docs/vms-qmp.md §"The QMP client"): newline-delimited
 * JSON over a unix stream socket. QEMU greets with `{"QMP": {...}}`; we answer
 * `qmp_capabilities` and from then on send `{"execute", "arguments", "id"}` and read replies
 * (`{"return", "id"}` / `{"error": {"class", "desc"}, "id"}`) and asynchronous events
 * (`{"event", "data", "timestamp"}`).
 *
 * Everything on the socket is untrusted: every line is bounded (`maxLineBytes`), parsed as JSON
 * and checked for the shape above; anything else ends the connection with a `QmpError`
 * (`KVMCHAN_E_QMP_PROTOCOL`). Every command has its own id and a timeout. End of file rejects
 * every pending command (`KVMCHAN_E_QMP_CLOSED`) and emits `close` once.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { QmpCommandError, QmpError, TimeoutError } from '../../../errors.js';

export interface QmpVersion {
  major: number;
  minor: number;
  micro: number;
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpClientOptions {
  /** Longest accepted line (reply or event), bytes. Default 4 MiB. */
  maxLineBytes?: number;
  /** Connecting plus greeting plus capabilities negotiation. Default 5 s. */
  connectTimeoutMs?: number;
  /** Default timeout of execute(). Default 10 s. */
  commandTimeoutMs?: number;
  /** Most commands in flight at once. Default 64. */
  maxPending?: number;
}

export interface QmpClientEvents {
  event: [event: QmpEvent];
  /** The connection ended (EOF, error, protocol violation or close()); emitted once. */
  close: [reason: QmpError];
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export const DEFAULT_QMP_MAX_LINE = 4 << 20;
/** Ids of commands that timed out, remembered so their late replies are not violations. */
const MAX_LATE_IDS = 256;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 1e9;
}

/** Validate QEMU's greeting; returns its version. */
function parseGreeting(msg: Record<string, unknown>): QmpVersion {
  const qmp = msg.QMP;
  if (!isObject(qmp) || !isObject(qmp.version) || !isObject(qmp.version.qemu) || !Array.isArray(qmp.capabilities)) {
    throw new QmpError('QMP greeting malformed');
  }
  const { major, minor, micro } = qmp.version.qemu;
  if (!isCount(major) || !isCount(minor) || !isCount(micro)) throw new QmpError('QMP greeting has no valid QEMU version');
  return { major, minor, micro };
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  readonly socketPath: string;
  /** QEMU's version from the greeting. */
  version: QmpVersion = { major: 0, minor: 0, micro: 0 };
  readonly #sock: net.Socket;
  readonly #maxLine: number;
  readonly #commandTimeoutMs: number;
  readonly #maxPending: number;
  readonly #pending = new Map<string, Pending>();
  readonly #late = new Set<string>();
  #chunks: Buffer[] = [];
  #buffered = 0;
  #nextId = 1;
  #closed: QmpError | null = null;
  /** Set while waiting for the greeting. */
  #greeting: ((msg: Record<string, unknown>) => void) | null = null;

  private constructor(sock: net.Socket, socketPath: string, opts: QmpClientOptions) {
    super();
    this.#sock = sock;
    this.socketPath = socketPath;
    this.#maxLine = opts.maxLineBytes ?? DEFAULT_QMP_MAX_LINE;
    this.#commandTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    this.#maxPending = opts.maxPending ?? 64;
    sock.on('data', (chunk: Buffer) => {
      this.#onData(chunk);
    });
    sock.on('error', (err) => {
      this.#end(new QmpError(`QMP socket ${socketPath}: ${err.message}`, 'KVMCHAN_E_QMP_CLOSED', { cause: err }));
    });
    sock.on('close', () => {
      this.#end(new QmpError(`QMP connection to ${socketPath} closed`, 'KVMCHAN_E_QMP_CLOSED'));
    });
  }

  /**
   * Connect once (no retries: callers decide), read and validate the greeting, negotiate
   * capabilities. Rejects with `KVMCHAN_E_QMP_CONNECT` when nobody listens or QEMU does not
   * greet in time (its monitor serves one client at a time: another client may hold it).
   */
  static async connect(socketPath: string, opts: QmpClientOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.connectTimeoutMs ?? 5000;
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new QmpError(`QMP ${socketPath}: no connection within ${timeoutMs} ms`, 'KVMCHAN_E_QMP_CONNECT'));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new QmpError(`QMP ${socketPath}: ${err.message}`, 'KVMCHAN_E_QMP_CONNECT', { cause: err }));
      });
    });
    const client = new QmpClient(sock, socketPath, opts);
    try {
      const greeting = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(
            new QmpError(
              `QMP ${socketPath}: no greeting within ${timeoutMs} ms (is another client holding the monitor?)`,
              'KVMCHAN_E_QMP_CONNECT',
            ),
          );
        }, timeoutMs);
        const onClose = (why: QmpError): void => {
          clearTimeout(timer);
          reject(why);
        };
        client.once('close', onClose);
        client.#greeting = (msg) => {
          clearTimeout(timer);
          client.off('close', onClose);
          resolve(msg);
        };
      });
      client.version = parseGreeting(greeting);
      const caps = await client.execute('qmp_capabilities', undefined, timeoutMs);
      if (!isObject(caps)) throw new QmpError('qmp_capabilities returned something other than an object');
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  get closed(): boolean {
    return this.#closed !== null;
  }

  /** Commands in flight. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Run one command. Resolves with its `return` value (unvalidated JSON: check it), rejects with
   * `QmpCommandError` when QEMU refuses it, `TimeoutError` after `timeoutMs` (the connection
   * stays up; a late reply is dropped), `QmpError` when the connection ends first.
   */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = this.#commandTimeoutMs): Promise<unknown> {
    if (this.#closed !== null) return Promise.reject(new QmpError(`QMP connection closed (${command})`, 'KVMCHAN_E_QMP_CLOSED'));
    if (this.#pending.size >= this.#maxPending) {
      return Promise.reject(new QmpError(`QMP: more than ${this.#maxPending} commands in flight (${command})`, 'KVMCHAN_E_QMP_BUSY'));
    }
    const id = `kvmchan-${this.#nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        this.#late.add(id);
        if (this.#late.size > MAX_LATE_IDS) this.#late.delete(this.#late.values().next().value!);
        reject(new TimeoutError(`QMP ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.#sock.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** Wait for the next event named `name` (matching `pred`); rejects on timeout or close. */
  waitEvent(name: string, timeoutMs: number, pred: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    if (this.#closed !== null) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const timer = setTimeout(() => {
        done();
        reject(new TimeoutError(`no QMP ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const onEvent = (e: QmpEvent): void => {
        if (e.event !== name || !pred(e)) return;
        done();
        resolve(e);
      };
      const onClose = (why: QmpError): void => {
        done();
        reject(why);
      };
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** Close the connection (QEMU keeps running). Idempotent. */
  close(): void {
    this.#end(new QmpError(`QMP connection to ${this.socketPath} closed by us`, 'KVMCHAN_E_QMP_CLOSED'));
  }

  #end(why: QmpError): void {
    if (this.#closed !== null) return;
    this.#closed = why;
    this.#sock.destroy();
    this.#chunks = [];
    this.#buffered = 0;
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(new QmpError(`${why.message} during ${p.command}`, why.code));
    }
    this.#pending.clear();
    this.emit('close', why);
  }

  #violation(what: string): void {
    this.#end(new QmpError(`QMP ${this.socketPath}: ${what}`, 'KVMCHAN_E_QMP_PROTOCOL'));
  }

  #onData(chunk: Buffer): void {
    let start = 0;
    while (this.#closed === null) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) {
        const rest = chunk.length - start;
        if (this.#buffered + rest > this.#maxLine) {
          this.#violation(`line longer than ${this.#maxLine} bytes`);
          return;
        }
        if (rest > 0) {
          this.#chunks.push(chunk.subarray(start));
          this.#buffered += rest;
        }
        return;
      }
      if (this.#buffered + (nl - start) > this.#maxLine) {
        this.#violation(`line longer than ${this.#maxLine} bytes`);
        return;
      }
      const part = chunk.subarray(start, nl);
      const line = this.#chunks.length === 0 ? part : Buffer.concat([...this.#chunks, part]);
      this.#chunks = [];
      this.#buffered = 0;
      start = nl + 1;
      this.#onLine(line.toString('utf8').trim());
    }
  }

  #onLine(line: string): void {
    if (line.length === 0) return;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.#violation('a line that is not JSON');
      return;
    }
    if (!isObject(msg)) {
      this.#violation('a JSON value that is not an object');
      return;
    }
    if (this.#greeting !== null) {
      if (!('QMP' in msg)) {
        this.#violation('first line is not a QMP greeting');
        return;
      }
      const g = this.#greeting;
      this.#greeting = null;
      g(msg);
      return;
    }
    if (typeof msg.event === 'string') {
      const data = msg.data ?? {};
      if (!isObject(data)) {
        this.#violation(`event ${msg.event.slice(0, 64)} with non-object data`);
        return;
      }
      const ev: QmpEvent = { event: msg.event, data };
      const ts = msg.timestamp;
      if (isObject(ts) && typeof ts.seconds === 'number' && typeof ts.microseconds === 'number') {
        ev.timestamp = { seconds: ts.seconds, microseconds: ts.microseconds };
      }
      this.emit('event', ev);
      return;
    }
    const id = msg.id;
    if (typeof id !== 'string') {
      this.#violation('a reply without our id');
      return;
    }
    const p = this.#pending.get(id);
    if (p === undefined) {
      if (this.#late.delete(id)) return; // the reply of a command that timed out
      this.#violation(`a reply to unknown id ${JSON.stringify(id.slice(0, 64))}`);
      return;
    }
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if ('return' in msg) {
      p.resolve(msg.return);
    } else if (isObject(msg.error) && typeof msg.error.class === 'string' && typeof msg.error.desc === 'string') {
      p.reject(new QmpCommandError(p.command, msg.error.class.slice(0, 128), msg.error.desc.slice(0, 4096)));
    } else {
      p.reject(new QmpError(`QMP ${p.command}: reply has neither return nor a valid error`));
      this.#violation(`malformed reply to ${p.command}`);
    }
  }
}
