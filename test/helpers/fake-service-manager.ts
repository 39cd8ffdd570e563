/**
 * A fake service manager for kvmchand's fd store (src/daemon/fd-store.ts, docs/operations.md
 * "systemd"): a bound AF_UNIX datagram socket as $NOTIFY_SOCKET that keeps every fd sent with
 * FDSTORE=1 under its FDNAME and closes it on FDSTOREREMOVE=1, as systemd does; and a way to
 * start kvmchand with the stored fds passed back at 3, 4, … (LISTEN_FDS, LISTEN_FDNAMES and a
 * LISTEN_PID that names the daemon: `sh -c 'LISTEN_PID=$$ exec node …'` keeps the pid).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { native, READABLE, type Poller } from '../../src/native.js';
import { DAEMON_MAIN } from '../../src/cli/private-daemon.js';
import { socketPath } from '../../src/paths.js';

export interface StoredFd {
  name: string;
  fd: number;
}

export class FakeServiceManager {
  readonly socketPath: string;
  /** In store order, as systemd passes them back. */
  readonly store: StoredFd[] = [];
  /** Every name removed (FDSTOREREMOVE=1), in order. */
  readonly removed: string[] = [];
  /** Every message's text, in order. */
  readonly messages: string[] = [];
  readonly #fd: number;
  readonly #poller: Poller;

  constructor(dir: string) {
    this.socketPath = path.join(dir, 'notify.sock');
    fs.rmSync(this.socketPath, { force: true });
    this.#fd = native.listenUnix(this.socketPath, 'dgram', 0, 0o600);
    this.#poller = new native.Poller(this.#fd, () => {
      this.drain();
    });
    this.#poller.start(READABLE);
    this.#poller.unref();
  }

  /**
   * Stop reading, as a busy or stuck manager does; with `fill`, also fill the socket's queue
   * (/proc/sys/net/unix/max_dgram_qlen datagrams) so that the next send finds no room. The
   * filler is a connected non-blocking socket of the test's own: it never waits, whatever the
   * code under test does. Returns how many datagrams the fill took.
   */
  pause(opts: { fill?: boolean } = {}): number {
    this.#poller.stop();
    if (opts.fill !== true) return 0;
    const fd = native.connectUnix(this.socketPath, 'dgram');
    let n = 0;
    try {
      for (;;) {
        native.sendmsg(fd, Buffer.from('FILLER=1\n'), []);
        n++;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    } finally {
      native.close(fd);
    }
    return n;
  }

  /** Read again: what queued up is read at once, later datagrams as they come. */
  resume(): void {
    this.#poller.start(READABLE);
    this.drain();
  }

  /** Messages read so far that are not the fill's. */
  get notifications(): string[] {
    return this.messages.filter((m) => m !== 'FILLER=1\n');
  }

  get names(): string[] {
    return this.store.map((s) => s.name).sort();
  }

  /** Read every queued notification (also called by the poller). */
  drain(): void {
    for (;;) {
      const r = native.recvmsg(this.#fd, 4096, 253);
      if (r === null) return;
      const text = r.data.toString();
      this.messages.push(text);
      const fields = new Map(
        text
          .split('\n')
          .filter((l) => l.includes('='))
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
      );
      const name = fields.get('FDNAME') ?? 'stored';
      if (fields.get('FDSTORE') === '1') {
        for (const fd of r.fds) this.store.push({ name, fd });
        continue;
      }
      for (const fd of r.fds) native.close(fd);
      if (fields.get('FDSTOREREMOVE') === '1') {
        this.removed.push(name);
        for (let i = this.store.length - 1; i >= 0; i--) {
          if (this.store[i]!.name !== name) continue;
          native.close(this.store[i]!.fd);
          this.store.splice(i, 1);
        }
      }
    }
  }

  /** Add an fd of the test's own to the store (for bad names, extra fds). Takes it over. */
  put(name: string, fd: number): void {
    this.store.push({ name, fd });
  }

  /**
   * Start kvmchand as the service manager would: NOTIFY_SOCKET, and the store passed back.
   * `listenPid: 'other'` names another process in LISTEN_PID.
   */
  async startDaemon(opts: {
    runtimeDir: string;
    args?: string[];
    logFile?: string;
    listenPid?: 'self' | 'other';
    startTimeoutMs?: number;
  }): Promise<ChildProcess> {
    const out = opts.logFile === undefined ? 'ignore' : fs.openSync(opts.logFile, 'a');
    const passed = [...this.store];
    const pid = opts.listenPid === 'other' ? '1' : '$$';
    const child = spawn(
      '/bin/sh',
      [
        '-c',
        `LISTEN_PID=${pid} exec "$0" "$@"`,
        process.execPath,
        DAEMON_MAIN,
        '--runtime-dir',
        opts.runtimeDir,
        '--log-level',
        'info',
        ...(opts.args ?? []),
      ],
      {
        stdio: ['ignore', out, 'pipe', ...passed.map((s) => s.fd)],
        env: {
          ...process.env,
          NOTIFY_SOCKET: this.socketPath,
          ...(passed.length > 0 ? { LISTEN_FDS: String(passed.length), LISTEN_FDNAMES: passed.map((s) => s.name).join(':') } : {}),
        },
      },
    );
    if (typeof out === 'number') fs.closeSync(out);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const deadline = Date.now() + (opts.startTimeoutMs ?? 15_000);
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`kvmchand exited during start-up: ${stderr}`);
      try {
        native.close(native.connectUnix(socketPath(opts.runtimeDir), 'seqpacket'));
        break;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`kvmchand did not start: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    // Like systemd, the store keeps its own copies; what was passed is the daemon's now.
    return child;
  }

  close(): void {
    this.#poller.close();
    native.close(this.#fd);
    for (const s of this.store) native.close(s.fd);
    this.store.length = 0;
    fs.rmSync(this.socketPath, { force: true });
  }
}

/** Stop a daemon the fake manager started: `signal`, then wait for its exit. */
export async function stopDaemon(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

/** What each fd of process `pid` points at (readlink of /proc/<pid>/fd/*). */
export function fdTargets(pid: number): string[] {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const n of fs.readdirSync(dir)) {
    try {
      out.push(fs.readlinkSync(path.join(dir, n)));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
