/**
 * A hostile guest (architecture.md rule 5; docs/security.md): instead of `kvmchand --guest`, this program attaches
 * to a simulated guest's devices exactly as the guest daemon does (src/daemon/guest/guest-service.ts:
 * SocketDevice on `<host runtime>/domains/<id>/control.sock`, the control ring, the pools announced
 * with EVENT_POOL_ADDED) and then misbehaves on command: malformed control frames, doorbell floods,
 * scribbles on the control pages of vchans it was granted, requests policy forbids, floods of
 * requests, not reading its replies.
 *
 * Usage: node dist/test/helpers/hostile-guest.js <deviceDir>
 * It speaks the JSON-lines protocol of test/helpers/vchan-peer.ts (drive it with
 * `PeerProcess.spawn(deviceDir, { main: HOSTILE_GUEST_MAIN })`): one command per stdin line,
 * one `{"id", "ok", ...}` answer each; `{"event": "disconnected", ...}` when the host cuts it off.
 * It exits when stdin closes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SocketDevice } from '../../src/ivshmem/socket-device.js';
import { native } from '../../src/native.js';
import { RingEndpoint } from '../../src/ring/endpoint.js';
import { EventFdWaiter } from '../../src/ring/eventfd-waiter.js';
import {
  HEADER_SIZE,
  MAGIC,
  OFF_C2S_CONS,
  OFF_C2S_PROD,
  OFF_CLIENT_STATE,
  OFF_S2C_CONS,
  OFF_S2C_PROD,
  OFF_S2C_WRAPS,
  OFF_C2S_WRAPS,
  OFF_SERVER_NOTIFY,
  OFF_SERVER_STATE,
  NOTIFY_WRITE,
  STATE_WAITING,
} from '../../src/ring/layout.js';
import { RingLink } from '../../src/transport/ring-link.js';
import { decodeEvent, decodeReply, encodeFrame, encodeRequest } from '../../src/protocol/codec.js';
import { Command, Event, EVENT_BIT, TIMEOUT_INFINITE, VchanRole, type CommandId } from '../../src/protocol/constants.js';
import type { Frame, GuestVchanInfo, PoolAddedEvent, RequestBodies } from '../../src/protocol/types.js';
import { CONTROL_GEOMETRY } from '../../src/daemon/guest-link/host-link.js';
import { Prng } from './prng.js';
import { sleep } from './wait.js';

export const HOSTILE_GUEST_MAIN = fileURLToPath(import.meta.url);

type Json = Record<string, unknown>;

interface Reply {
  id: number;
  seq: number;
  err: number;
  frame: Frame;
}

/** One vchan the host granted us, mapped from its pool. */
interface Granted {
  info: GuestVchanInfo;
  dev: SocketDevice;
  region: ArrayBuffer;
  endpoint: RingEndpoint;
}

const PROTOCOL_CODE_TIMEOUT_MS = 10000;

export class HostileGuest {
  readonly deviceDir: string;
  #control: SocketDevice | null = null;
  #waiter: EventFdWaiter | null = null;
  #mapping: ArrayBuffer | null = null;
  #link: RingLink | null = null;
  #endpoint: RingEndpoint | null = null;
  #nextSeq = 1;
  readonly #pending = new Map<number, (r: Reply) => void>();
  readonly pools = new Map<number, SocketDevice>();
  readonly #poolWaiters: (() => void)[] = [];
  readonly granted = new Map<number, Granted>();
  /** Sessions so far (each attach starts one). */
  session = 0;
  #disconnected: Promise<string> = Promise.resolve('never attached');
  #onDisconnect: ((why: string) => void) | null = null;
  /** Frames the host sent that matched no request of ours (after garbage, say). */
  readonly unmatched: { id: number; seq: number }[] = [];
  /** Frames received from the host so far. */
  received = 0;
  onEvent: (ev: Json) => void = () => undefined;

  constructor(deviceDir: string) {
    this.deviceDir = deviceDir;
  }

  get attached(): boolean {
    return this.#control !== null && !this.#control.closed;
  }

  /** Attach to the control device and wait for the host to offer a fresh control ring. */
  async attach(timeoutMs = 10000): Promise<number> {
    this.#detach();
    const control = await SocketDevice.connect(path.join(this.deviceDir, 'control.sock'), { vectors: 1, timeoutMs });
    this.#control = control;
    this.session++;
    const session = this.session;
    this.#disconnected = new Promise((resolve) => {
      this.#onDisconnect = resolve;
    });
    control.on('close', (err) => {
      if (session !== this.session) return;
      const why = err === null ? 'closed locally' : err.message;
      this.#onDisconnect?.(why);
      this.onEvent({ event: 'disconnected', session, why });
    });
    const doorbell = control.doorbellFd(0, 0);
    if (doorbell === null) throw new Error('no host doorbell on the control device');
    this.#waiter = new EventFdWaiter(native.dup(control.interruptFd(0)), native.dup(doorbell));
    const mapping = control.map(0, control.shm.size);
    this.#mapping = mapping;
    const ctl = new Int32Array(mapping, 0, HEADER_SIZE / 4);
    const deadline = Date.now() + timeoutMs;
    while (!(Atomics.load(ctl, 0) === (MAGIC | 0) && Atomics.load(ctl, OFF_CLIENT_STATE / 4) === STATE_WAITING)) {
      if (Date.now() > deadline) throw new Error('the host never offered the control ring');
      await this.#waiter.wait(AbortSignal.timeout(Math.max(1, deadline - Date.now())));
    }
    const endpoint = new RingEndpoint(mapping, 0, { role: 'client', ...CONTROL_GEOMETRY }, this.#waiter.kick);
    endpoint.attach();
    this.#endpoint = endpoint;
    this.#nextSeq = 1;
    // No bound on what we queue (RingLink's default): a hostile guest floods whether or not
    // the host keeps up.
    this.#link = new RingLink(endpoint, this.#waiter, {
      onFrame: (f) => {
        this.#onFrame(f);
      },
      onClose: (err) => {
        this.onEvent({ event: 'ring-closed', session, error: err?.message ?? null });
      },
    });
    return session;
  }

  /** Resolves with the reason once the host disconnected the current session's control device. */
  disconnected(): Promise<string> {
    return this.#disconnected;
  }

  #onFrame(f: Frame): void {
    this.received++;
    if ((f.id & EVENT_BIT) !== 0) {
      const r = decodeEvent(f);
      if (r.ok && r.value.id === Event.POOL_ADDED) void this.#attachPool(r.value.body);
      return;
    }
    const resolve = this.#pending.get(f.seq);
    const err = f.payload.length >= 4 ? f.payload.readInt32LE(0) : NaN;
    if (resolve === undefined) {
      this.unmatched.push({ id: f.id, seq: f.seq });
      return;
    }
    this.#pending.delete(f.seq);
    resolve({ id: f.id, seq: f.seq, err, frame: f });
  }

  async #attachPool(p: PoolAddedEvent): Promise<void> {
    if (this.pools.has(p.pool)) return;
    try {
      const dev = await SocketDevice.connect(path.join(this.deviceDir, p.socket), { vectors: p.vectors });
      this.pools.set(p.pool, dev);
      dev.on('close', () => this.pools.delete(p.pool));
      for (const w of this.#poolWaiters.splice(0)) w();
      this.onEvent({ event: 'pool', pool: p.pool, vectors: p.vectors, size: p.size });
    } catch (err) {
      this.onEvent({ event: 'pool-error', pool: p.pool, error: (err as Error).message });
    }
  }

  async waitPools(n: number, timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.pools.size < n) {
      if (Date.now() > deadline) throw new Error(`only ${this.pools.size} pools attached, wanted ${n}`);
      await new Promise<void>((resolve) => {
        this.#poolWaiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  /**
   * Corrupt the control ring itself: claim far more bytes in the guest→host direction than the
   * ring holds, then ring the host.
   */
  scribbleControl(): void {
    if (this.#mapping === null || this.#control === null) throw new Error('not attached');
    Atomics.add(new Int32Array(this.#mapping, 0, HEADER_SIZE / 4), OFF_C2S_PROD / 4, 3 << 20);
    this.#control.doorbell(0, 0);
  }

  /**
   * Jam the eventfd the host interrupts us through (control vector 0), as a guest — or its QEMU —
   * holding it can (docs/security.md, "Shared eventfds"): nothing here reads it any more (the
   * link is abandoned, not closed: the session stays), a child process saturates its counter and
   * keeps clearing O_NONBLOCK on the open file description the host shares; then `requests`
   * LIST_VCHANS go straight into the control ring, each with the WRITE notification armed, so
   * that every reply makes the host interrupt us. Without a bound the host's first such
   * interrupt sleeps in write(2) for ever. Returns the jammer; kill it to stop.
   */
  async jamInterrupt(requests: number): Promise<ChildProcess> {
    const control = this.#control;
    const endpoint = this.#endpoint;
    const mapping = this.#mapping;
    if (control === null || endpoint === null || mapping === null) throw new Error('not attached');
    this.#link?.abandon();
    this.#link = null;
    this.#waiter?.close();
    this.#waiter = null;
    const script = [
      'import fcntl, os, sys',
      'fl = fcntl.fcntl(3, fcntl.F_GETFL)',
      'first = True',
      'while True:',
      '    fcntl.fcntl(3, fcntl.F_SETFL, fl | os.O_NONBLOCK)',
      '    try:',
      "        os.write(3, (0xfffffffffffffffe).to_bytes(8, 'little'))",
      '    except BlockingIOError:',
      '        pass',
      '    fcntl.fcntl(3, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)',
      '    if first:',
      '        print("ready", flush=True)',
      '        first = False',
    ].join('\n');
    const jammer = spawn('python3', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit', control.interruptFd(0)] });
    await new Promise<void>((resolve, reject) => {
      jammer.stdout!.once('data', () => {
        resolve();
      });
      jammer.once('exit', (code) => {
        reject(new Error(`the jammer exited (${code})`));
      });
    });
    const ctl = new Int32Array(mapping, 0, HEADER_SIZE / 4);
    for (let i = 0; i < requests; i++) {
      const seq = this.#nextSeq;
      this.#nextSeq = (seq + 1) >>> 0;
      Atomics.or(ctl, OFF_SERVER_NOTIFY / 4, NOTIFY_WRITE);
      if (endpoint.trySend(encodeRequest(Command.LIST_VCHANS, seq, { start: 0 })) === 0) break;
      control.doorbell(0, 0);
      await sleep(5);
    }
    return jammer;
  }

  /** Bytes straight into the control ring, no framing of ours. */
  sendRaw(bytes: Uint8Array): void {
    if (this.#link === null) throw new Error('not attached');
    this.#link.send(Buffer.from(bytes));
  }

  /** Stop (or start again) reading the control ring: the host's replies pile up. */
  reading(on: boolean): void {
    if (this.#link === null) throw new Error('not attached');
    if (on) this.#link.resume();
    else this.#link.pause();
  }

  /**
   * `count` requests sent back to back without waiting for replies (they end up in
   * `unmatched`): GUEST_VCHAN_CLOSE of a handle nobody holds, each under a fresh `conn`
   * from `firstConn` on, or LIST_VCHANS.
   */
  spray(kind: 'close' | 'list', count: number, firstConn = 1): void {
    for (let i = 0; i < count; i++) {
      const seq = this.#nextSeq;
      this.#nextSeq = (seq + 1) >>> 0;
      const frame =
        kind === 'close'
          ? encodeRequest(Command.GUEST_VCHAN_CLOSE, seq, { conn: (firstConn + i) >>> 0, handle: 0x7fffffff })
          : encodeRequest(Command.LIST_VCHANS, seq, { start: 0 });
      this.sendRaw(frame);
    }
  }

  /** A frame with any id, seq and payload; resolves with the host's reply (or rejects after a timeout). */
  frame(id: number, payload: Uint8Array, seq = this.#nextSeq, timeoutMs = PROTOCOL_CODE_TIMEOUT_MS): Promise<Reply> {
    this.#nextSeq = (seq + 1) >>> 0;
    const reply = new Promise<Reply>((resolve, reject) => {
      const t = setTimeout(() => {
        this.#pending.delete(seq);
        reject(new Error(`no reply to 0x${id.toString(16)} seq ${seq} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(seq, (r) => {
        clearTimeout(t);
        resolve(r);
      });
    });
    this.sendRaw(encodeFrame(id, seq, payload));
    return reply;
  }

  /** A well-formed request; the reply decoded when err is 0. */
  async request<K extends CommandId>(id: K, body: RequestBodies[K]): Promise<{ err: number; body?: unknown }> {
    const seq = this.#nextSeq;
    const payload = encodeRequest(id, seq, body).subarray(8);
    const r = await this.frame(id, payload, seq);
    if (r.err !== 0) return { err: r.err };
    const d = decodeReply(r.frame);
    if (!d.ok) throw d.error;
    return { err: 0, body: (d.value as { body?: unknown }).body };
  }

  /** Map a granted vchan's range of its pool and drive it with a ring endpoint of our own. */
  async grant(info: GuestVchanInfo): Promise<Granted> {
    const deadline = Date.now() + 5000;
    while (!this.pools.has(info.pool)) {
      if (Date.now() > deadline) throw new Error(`pool ${info.pool} never attached`);
      await sleep(10);
    }
    const dev = this.pools.get(info.pool)!;
    const region = dev.map(info.shmOffset, info.shmLength);
    const server = info.role === VchanRole.SERVER;
    const geometry = server
      ? { c2sOrder: info.readOrder, s2cOrder: info.writeOrder }
      : { c2sOrder: info.writeOrder, s2cOrder: info.readOrder };
    const endpoint = new RingEndpoint(region, 0, { role: server ? 'server' : 'client', ...geometry }, () => {
      dev.doorbell(info.peerId, info.peerVector);
    });
    if (!server) endpoint.attach();
    const g = { info, dev, region, endpoint };
    this.granted.set(info.handle, g);
    return g;
  }

  /**
   * Ring the host's vectors in a tight loop for `ms`: the control device's and every vector
   * of every pool (the host is peer 0 everywhere). Bursts of 2000 rings between turns of the
   * event loop, so this process still answers its driver.
   */
  async flood(ms: number): Promise<number> {
    const targets: SocketDevice[] = [...this.pools.values()];
    if (this.#control !== null) targets.push(this.#control);
    const fds: number[] = [];
    for (const dev of targets) {
      for (let v = 0; v < dev.vectors; v++) {
        const fd = dev.doorbellFd(0, v);
        if (fd !== null) fds.push(fd);
      }
    }
    if (fds.length === 0) throw new Error('nothing to ring');
    let rings = 0;
    const end = Date.now() + ms;
    while (Date.now() < end) {
      for (let i = 0; i < 2000; i++) {
        native.eventfdWrite(fds[rings % fds.length]!, 1);
        rings++;
      }
      await new Promise((r) => setImmediate(r));
    }
    return rings;
  }

  #detach(): void {
    for (const g of this.granted.values()) {
      try {
        g.dev.unmap(g.region);
      } catch {
        // the device is already gone
      }
    }
    this.granted.clear();
    try {
      this.#link?.close();
    } catch {
      // The host disconnected us: the device already unmapped the ring.
    }
    this.#link = null;
    this.#endpoint = null;
    this.#waiter?.close();
    this.#waiter = null;
    if (this.#mapping !== null && this.#control !== null && !this.#control.closed) this.#control.unmap(this.#mapping);
    this.#mapping = null;
    const c = this.#control;
    this.#control = null;
    c?.close();
    for (const [, resolve] of this.#pending)
      resolve({ id: -1, seq: -1, err: NaN, frame: { id: -1, seq: -1, payload: Buffer.alloc(0), fds: [] } });
    this.#pending.clear();
  }

  close(): void {
    this.#detach();
    for (const dev of this.pools.values()) dev.close();
    this.pools.clear();
  }
}

// ---- scribbling on a granted vchan's control page (ring-protocol.md §2)

/** Field offsets by what the honest peer reads from us, per our role. */
function ours(role: VchanRole): { prod: number; cons: number; state: number; wraps: number } {
  return role === VchanRole.SERVER
    ? { prod: OFF_S2C_PROD, cons: OFF_C2S_CONS, state: OFF_SERVER_STATE, wraps: OFF_S2C_WRAPS }
    : { prod: OFF_C2S_PROD, cons: OFF_S2C_CONS, state: OFF_CLIENT_STATE, wraps: OFF_C2S_WRAPS };
}

function scribble(g: Granted, mode: string, rng: Prng): void {
  const ctl = new Int32Array(g.region, 0, HEADER_SIZE / 4);
  const f = ours(g.info.role);
  switch (mode) {
    case 'producer':
      // Claim far more data than the ring holds.
      Atomics.add(ctl, f.prod / 4, 3 << 20);
      break;
    case 'consumer':
      // Claim to have consumed data that was never written.
      Atomics.sub(ctl, f.cons / 4, 5 << 20);
      break;
    case 'state':
      Atomics.store(ctl, f.state / 4, 0x7777);
      break;
    case 'counters':
      // Huge byte counters (status reads them): wraps near 2^32.
      Atomics.store(ctl, f.wraps / 4, -1);
      break;
    case 'random':
      // Every byte of the control page, the header and the peer's own fields included.
      new Uint8Array(g.region, 0, HEADER_SIZE).set(rng.bytes(HEADER_SIZE));
      break;
    default:
      throw new Error(`unknown scribble mode ${mode}`);
  }
  g.dev.doorbell(g.info.peerId, g.info.peerVector);
}

// ---- the JSON-lines program

function errorJson(err: unknown): Json {
  const e = err as { name?: string; code?: string; message?: string };
  return { name: e.name ?? 'Error', code: e.code ?? null, message: e.message ?? String(err) };
}

function infoJson(info: GuestVchanInfo): Json {
  return { ...info };
}

async function run(g: HostileGuest, cmd: Json): Promise<Json> {
  const num = (k: string, dflt?: number): number => {
    const v = cmd[k] ?? dflt;
    if (v === undefined) throw new Error(`${String(cmd['op'])}: missing ${k}`);
    return Number(v);
  };
  switch (cmd['op']) {
    case 'attach':
      return { session: await g.attach(num('timeout', 10000)) };
    case 'hello': {
      const r = await g.request(Command.GUEST_HELLO, { version: 1 });
      return { err: r.err, ...(r.body as Json | undefined) };
    }
    case 'waitPools':
      await g.waitPools(num('count', 1), num('timeout', 10000));
      return { pools: [...g.pools.keys()].sort((a, b) => a - b) };
    case 'garbage': {
      // Random bytes from a seed: the host must not be able to make sense of them.
      const bytes = new Prng(num('seed')).bytes(num('bytes'));
      g.sendRaw(bytes);
      return { sent: bytes.length };
    }
    case 'scribbleControl':
      g.scribbleControl();
      return {};
    case 'raw':
      g.sendRaw(Buffer.from(cmd['data'] as string, 'base64'));
      return {};
    case 'frame': {
      // Any message id (`msgId`: `id` numbers the JSON commands) / seq / payload; `wait: false`
      // for frames the host must not answer.
      const payload = Buffer.from((cmd['payload'] as string | undefined) ?? '', 'base64');
      const seq = cmd['seq'] === undefined ? undefined : num('seq');
      const p = g.frame(num('msgId'), payload, seq, num('timeout', PROTOCOL_CODE_TIMEOUT_MS));
      if (cmd['wait'] === false) {
        p.catch(() => undefined);
        return {};
      }
      const r = await p;
      return { msgId: r.id, seq: r.seq, err: r.err, size: r.frame.payload.length };
    }
    case 'waitDisconnect': {
      const t0 = Date.now();
      const why = await Promise.race([
        g.disconnected(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('still attached')), num('timeout', 10000))),
      ]);
      return { why, ms: Date.now() - t0 };
    }
    case 'serverInit': {
      const r = await g.request(Command.GUEST_VCHAN_SERVER_INIT, {
        conn: num('conn', 1),
        peerDomain: num('domain', 0),
        port: num('port'),
        readMin: num('readMin', 0),
        writeMin: num('writeMin', 0),
      });
      if (r.err !== 0) return { err: r.err };
      const info = r.body as GuestVchanInfo;
      if (cmd['map'] !== false) await g.grant(info);
      return { err: 0, info: infoJson(info) };
    }
    case 'clientInit': {
      const r = await g.request(Command.GUEST_VCHAN_CLIENT_INIT, {
        conn: num('conn', 1),
        serverDomain: num('domain', 0),
        port: num('port'),
        timeoutMs: cmd['timeoutMs'] === undefined ? TIMEOUT_INFINITE : num('timeoutMs'),
        flags: 0,
      });
      if (r.err !== 0) return { err: r.err };
      const info = r.body as GuestVchanInfo;
      if (cmd['map'] !== false) await g.grant(info);
      return { err: 0, info: infoJson(info) };
    }
    case 'closeVchan': {
      const r = await g.request(Command.GUEST_VCHAN_CLOSE, { conn: num('conn', 1), handle: num('handle') });
      return { err: r.err };
    }
    case 'closeHandles': {
      // Try to close every handle in [from, to) under every conn in [0, conns): only our own may go.
      const results: Record<string, number> = {};
      for (let h = num('from'); h < num('to'); h++) {
        for (let c = 0; c < num('conns', 4); c++) {
          const r = await g.request(Command.GUEST_VCHAN_CLOSE, { conn: c, handle: h });
          results[String(r.err)] = (results[String(r.err)] ?? 0) + 1;
        }
      }
      return { results };
    }
    case 'shm': {
      // One GUEST_SHM_* request with whatever conn / domain / id / pages the test names.
      const conn = num('conn', 1);
      const r =
        cmd['cmd'] === 'share'
          ? await g.request(Command.GUEST_SHM_SHARE, { conn, domain: num('domain', 0), pages: num('pages') })
          : cmd['cmd'] === 'map'
            ? await g.request(Command.GUEST_SHM_MAP, { conn, domain: num('domain'), id: num('region') })
            : cmd['cmd'] === 'unmap'
              ? await g.request(Command.GUEST_SHM_UNMAP, { conn, domain: num('domain'), id: num('region') })
              : await g.request(Command.GUEST_SHM_RELEASE, { conn, id: num('region') });
      return { err: r.err, ...(r.body === undefined ? {} : { info: r.body as Json }) };
    }
    case 'shmSpray': {
      // `count` GUEST_SHM_SHARE of `pages` pages, each under a fresh conn from `firstConn`: the
      // answers tallied by errno (nothing is kept: the host must bound what this can hold).
      const results: Record<string, number> = {};
      const replies = [];
      for (let i = 0; i < num('count'); i++) {
        replies.push(
          g.request(Command.GUEST_SHM_SHARE, { conn: (num('firstConn', 1) + i) >>> 0, domain: num('domain', 0), pages: num('pages', 1) }),
        );
      }
      for (const r of await Promise.all(replies)) results[String(r.err)] = (results[String(r.err)] ?? 0) + 1;
      return { results };
    }
    case 'connClosed': {
      const r = await g.request(Command.GUEST_CONN_CLOSED, { conn: num('conn') });
      return { err: r.err };
    }
    case 'listVchans': {
      const r = await g.request(Command.LIST_VCHANS, { start: 0 });
      return { err: r.err, ...(r.body as Json | undefined) };
    }
    case 'write': {
      const v = g.granted.get(num('handle'));
      if (v === undefined) throw new Error('no such granted vchan');
      const data = Buffer.from(cmd['data'] as string, 'base64');
      return { written: v.endpoint.tryWrite(data) };
    }
    case 'read': {
      const v = g.granted.get(num('handle'));
      if (v === undefined) throw new Error('no such granted vchan');
      const buf = Buffer.alloc(num('max', 65536));
      const n = v.endpoint.tryRead(buf);
      return { n, data: n > 0 ? buf.subarray(0, n).toString('base64') : '' };
    }
    case 'scribble': {
      const v = g.granted.get(num('handle'));
      if (v === undefined) throw new Error('no such granted vchan');
      const rng = new Prng(num('seed', 1));
      const rounds = num('rounds', 1);
      for (let i = 0; i < rounds; i++) {
        scribble(v, cmd['mode'] as string, rng);
        if (rounds > 1) await sleep(num('intervalMs', 1));
      }
      return { rounds };
    }
    case 'flood':
      return { rings: await g.flood(num('ms')) };
    case 'reading':
      g.reading(cmd['on'] === true);
      return {};
    case 'spray':
      g.spray(cmd['kind'] === 'list' ? 'list' : 'close', num('count'), num('firstConn', 1));
      return {};
    case 'received':
      return { received: g.received };
    case 'jam': {
      const jammer = await g.jamInterrupt(num('requests', 20));
      jammers.push(jammer);
      return { pid: jammer.pid };
    }
    case 'unjam':
      for (const j of jammers.splice(0)) j.kill('SIGKILL');
      return {};
    case 'state':
      return { attached: g.attached, session: g.session, pools: [...g.pools.keys()], unmatched: g.unmatched.length };
    case 'detach':
      g.close();
      return {};
    default:
      throw new Error(`unknown op ${String(cmd['op'])}`);
  }
}

/** Interrupt jammers this program started (killed on 'unjam' and when it exits). */
const jammers: ChildProcess[] = [];
process.on('exit', () => {
  for (const j of jammers) j.kill('SIGKILL');
});

function main(deviceDir: string): void {
  const g = new HostileGuest(deviceDir);
  const out = (obj: Json): void => {
    process.stdout.write(`${JSON.stringify(obj)}\n`);
  };
  g.onEvent = out;
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    if (line.trim() === '') return;
    const cmd = JSON.parse(line) as Json;
    run(g, cmd).then(
      (result) => {
        // The command's id last: a result must not be able to change it.
        out({ ok: true, ...result, id: cmd['id'] });
      },
      (err: unknown) => {
        out({ id: cmd['id'], ok: false, error: errorJson(err) });
      },
    );
  });
  rl.on('close', () => process.exit(0));
  out({ event: 'ready', pid: process.pid, uid: process.getuid?.() ?? -1 });
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === HOSTILE_GUEST_MAIN) {
  const dir = process.argv[2];
  if (dir === undefined) {
    process.stderr.write('usage: hostile-guest <deviceDir>\n');
    process.exit(2);
  }
  main(dir);
}
