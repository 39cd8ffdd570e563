/**
 * Test helper: a paused, OS-less QEMU (TCG) with a tiny QMP client, for hot-plugging
 * ivshmem-doorbell devices against our server (docs/ivshmem.md §10).
 * QEMU reads the server's setup synchronously at device_add, so no guest is needed to prove
 * that QEMU accepts (or refuses) what the server sends.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { sleep } from './wait.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

export interface QmpErrorBody {
  class: string;
  desc: string;
}

export class QmpCommandError extends Error {
  readonly qmpClass: string;
  constructor(command: string, body: QmpErrorBody) {
    super(`QMP ${command}: ${body.class}: ${body.desc}`);
    this.name = 'QmpCommandError';
    this.qmpClass = body.class;
  }
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Newline-delimited JSON over the QMP socket; one outstanding id per command. */
export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  readonly #sock: net.Socket;
  readonly #pending = new Map<string, Pending>();
  readonly events: QmpEvent[] = [];
  #buf = '';
  #nextId = 1;
  #closed = false;
  greeting: unknown = null;

  private constructor(sock: net.Socket) {
    super();
    this.#sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.#onData(chunk);
    });
    const onGone = (): void => {
      this.#closed = true;
      for (const p of this.#pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`QMP connection closed during ${p.command}`));
      }
      this.#pending.clear();
      this.emit('close');
    };
    sock.on('close', onGone);
    sock.on('error', () => undefined);
  }

  /** Connect (retrying while QEMU creates the socket), read the greeting, negotiate. */
  static async connect(socketPath: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(socketPath);
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        const qmp = new QmpClient(sock);
        qmp.greeting = await qmp.#nextLine(deadline - Date.now());
        await qmp.execute('qmp_capabilities');
        return qmp;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(20);
      }
    }
  }

  #greetingWaiter: ((line: unknown) => void) | null = null;

  #nextLine(ms: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          reject(new Error('QMP greeting timed out'));
        },
        Math.max(ms, 1),
      );
      this.#greetingWaiter = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  }

  #onData(chunk: string): void {
    this.#buf += chunk;
    for (;;) {
      const nl = this.#buf.indexOf('\n');
      if (nl < 0) return;
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line.length === 0) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if (this.#greetingWaiter !== null && 'QMP' in msg) {
        const w = this.#greetingWaiter;
        this.#greetingWaiter = null;
        w(msg);
      } else if (typeof msg.event === 'string') {
        const ev = msg as unknown as QmpEvent;
        this.events.push(ev);
        this.emit('event', ev);
      } else if (typeof msg.id === 'string') {
        const p = this.#pending.get(msg.id);
        if (p === undefined) continue;
        this.#pending.delete(msg.id);
        clearTimeout(p.timer);
        if ('error' in msg) p.reject(new QmpCommandError(p.command, msg.error as QmpErrorBody));
        else p.resolve(msg.return);
      }
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    if (this.#closed) return Promise.reject(new Error(`QMP connection closed (${command})`));
    const id = `kvmchan-${this.#nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`QMP ${command} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.#sock.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** Wait for an event matching `name` (and `pred`), including ones already received. */
  waitEvent(name: string, timeoutMs: number, pred: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    const seen = this.events.find((e) => e.event === name && pred(e));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('event', on);
        reject(new Error(`no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (e: QmpEvent): void => {
        if (e.event !== name || !pred(e)) return;
        clearTimeout(timer);
        this.off('event', on);
        resolve(e);
      };
      this.on('event', on);
    });
  }

  close(): void {
    this.#sock.destroy();
  }
}

function findOnPath(binary: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(dir, binary);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

/**
 * The QEMU binary, installing Debian's qemu-system-x86 when it is missing and we are root
 * (docs/testing.md: the project's scripts install what they need). Returns the path, or a reason
 * string when QEMU is unavailable.
 */
export function ensureQemu(): { path: string } | { reason: string } {
  const r = findOrInstallQemu();
  // CI sets KVMCHAN_REQUIRE_QEMU=1: a missing QEMU fails the tests instead of skipping them.
  if ('reason' in r && process.env['KVMCHAN_REQUIRE_QEMU'] === '1') {
    throw new Error(`QEMU is required (KVMCHAN_REQUIRE_QEMU=1) but unavailable: ${r.reason}`);
  }
  return r;
}

function findOrInstallQemu(): { path: string } | { reason: string } {
  const found = findOnPath(QEMU_BINARY) ?? (fs.existsSync(`/usr/bin/${QEMU_BINARY}`) ? `/usr/bin/${QEMU_BINARY}` : null);
  if (found !== null) return { path: found };
  if (process.getuid?.() !== 0) return { reason: `${QEMU_BINARY} not found and not root: apt-get install qemu-system-x86` };
  if (findOnPath('apt-get') === null) return { reason: `${QEMU_BINARY} not found and no apt-get to install it` };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const opts = { stdio: 'inherit' as const, env, timeout: 15 * 60_000 };
  console.error(`# ${QEMU_BINARY} missing: installing qemu-system-x86 with apt-get (this can take minutes)`);
  let r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'qemu-system-x86'], opts);
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], opts);
    r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'qemu-system-x86'], opts);
  }
  const after = findOnPath(QEMU_BINARY) ?? (fs.existsSync(`/usr/bin/${QEMU_BINARY}`) ? `/usr/bin/${QEMU_BINARY}` : null);
  return after !== null ? { path: after } : { reason: `apt-get install qemu-system-x86 failed (status ${r.status})` };
}

export interface QemuOptions {
  binary: string;
  /** Directory for the QMP socket (and nothing else of ours). */
  dir: string;
  /** Cold-plugged pcie-root-ports rp1..rpN to hot-plug onto (q35's pcie.0 is not hot-pluggable). */
  rootPorts?: number;
  /** pref64-reserve of every root port (e.g. '512M'); QEMU's default when absent. */
  rootPortReserve?: string;
  /** Machine type (default q35; pc has no root ports). */
  machine?: 'q35' | 'pc';
  /** Add a second QMP monitor at `<dir>/vm-qmp.sock` for a kvmchand to use (QEMU serves one client per monitor). */
  daemonQmp?: boolean;
  extraArgs?: string[];
}

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A paused (-S), display-less, device-less q35 under TCG, driven over QMP. */
export class QemuProcess {
  readonly child: ChildProcess;
  readonly qmp: QmpClient;
  readonly qmpPath: string;
  readonly exited: Promise<QemuExit>;
  /** ms from spawn to QMP ready. */
  readonly startupMs: number;
  #stderr = '';
  #exit: QemuExit | null = null;

  private constructor(child: ChildProcess, qmp: QmpClient, qmpPath: string, exited: Promise<QemuExit>, startupMs: number) {
    this.child = child;
    this.qmp = qmp;
    this.qmpPath = qmpPath;
    this.exited = exited;
    this.startupMs = startupMs;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      this.#stderr += s;
    });
    void exited.then((e) => {
      this.#exit = e;
    });
  }

  static async start(opts: QemuOptions): Promise<QemuProcess> {
    const qmpPath = path.join(opts.dir, 'qmp.sock');
    const machine = opts.machine ?? 'q35';
    const ports = machine === 'q35' ? (opts.rootPorts ?? 4) : 0;
    const args = [
      '-accel',
      'tcg',
      '-S',
      '-nodefaults',
      '-display',
      'none',
      '-machine',
      machine,
      '-m',
      '128',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
    ];
    if (opts.daemonQmp === true) args.push('-qmp', `unix:${path.join(opts.dir, 'vm-qmp.sock')},server=on,wait=off`);
    const reserve = opts.rootPortReserve !== undefined ? `,pref64-reserve=${opts.rootPortReserve}` : '';
    for (let i = 1; i <= ports; i++) args.push('-device', `pcie-root-port,id=rp${i},chassis=${i},slot=${i}${reserve}`);
    args.push(...(opts.extraArgs ?? []));
    const t0 = performance.now();
    const child = spawn(opts.binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<QemuExit>((resolve) => {
      child.once('exit', (code, signal) => {
        resolve({ code, signal });
      });
    });
    let early = '';
    child.stderr?.setEncoding('utf8');
    const collect = (s: string): void => {
      early += s;
    };
    child.stderr?.on('data', collect);
    try {
      const qmp = await Promise.race([
        QmpClient.connect(qmpPath),
        exited.then((e) => {
          throw new Error(`QEMU exited during startup (${JSON.stringify(e)}): ${early}`);
        }),
      ]);
      child.stderr?.off('data', collect);
      const q = new QemuProcess(child, qmp, qmpPath, exited, performance.now() - t0);
      q.#stderr = early;
      return q;
    } catch (err) {
      child.kill('SIGKILL');
      await exited;
      fs.rmSync(qmpPath, { force: true });
      throw err;
    }
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The second monitor for a kvmchand (QemuOptions.daemonQmp). */
  get daemonQmpPath(): string {
    return path.join(path.dirname(this.qmpPath), 'vm-qmp.sock');
  }

  get stderr(): string {
    return this.#stderr;
  }

  get exit(): QemuExit | null {
    return this.#exit;
  }

  /** What QEMU's fds point at (readlink of /proc/<pid>/fd/*). */
  fdTargets(): string[] {
    const dir = `/proc/${this.pid}/fd`;
    const out: string[] = [];
    for (const name of fs.readdirSync(dir)) {
      try {
        out.push(fs.readlinkSync(path.join(dir, name)));
      } catch {
        // raced with a close
      }
    }
    return out;
  }

  /** /proc/<pid>/maps lines mentioning `needle`. */
  mapsMatching(needle: string): string[] {
    return fs
      .readFileSync(`/proc/${this.pid}/maps`, 'utf8')
      .split('\n')
      .filter((l) => l.includes(needle));
  }

  /** SIGKILL, wait, remove the QMP socket file. Idempotent. */
  async kill(): Promise<QemuExit> {
    this.qmp.close();
    if (this.#exit === null) this.child.kill('SIGKILL');
    const e = await this.exited;
    fs.rmSync(this.qmpPath, { force: true });
    fs.rmSync(this.daemonQmpPath, { force: true });
    return e;
  }
}

/** Pids of live processes whose command line mentions `needle` (leftover check). */
export function processesMatching(needle: string): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmd.includes(needle) && Number(name) !== process.pid) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}
