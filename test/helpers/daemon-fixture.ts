/**
 * Shared pieces of the daemon, client and CLI integration tests: a private kvmchand per test
 * file (with an optional config file and a log file kept for failure reports), /proc
 * accounting of a process's fds and memory, polling, and a raw seqpacket client for
 * feeding the daemon hostile bytes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import { native, type RecvResult } from '../../src/native.js';
import { socketPath } from '../../src/paths.js';
import { MAX_FDS, MAX_FRAME } from '../../src/protocol/constants.js';

import { sleep, waitFor, within } from './wait.js';

// The waiting helpers live in wait.ts; re-exported for the fixtures' users.
export { sleep, waitFor, within };

export interface TestDaemonOptions {
  /** Written to a JSON file passed with --config. */
  config?: Record<string, unknown>;
  runtimeDir?: string;
  logLevel?: string;
}

export interface TestDaemon {
  daemon: PrivateDaemon;
  runtimeDir: string;
  logFile: string;
  /** The daemon's log so far (pino JSON lines). */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Runs every cleanup step even if earlier ones throw (or their object was never created
 * because a `before` hook failed), then rethrows the first error. A daemon left running
 * would keep the test process alive forever.
 */
export async function teardown(...steps: (() => unknown)[]): Promise<void> {
  const errors: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
}

export async function startDaemon(opts: TestDaemonOptions = {}): Promise<TestDaemon> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-test-'));
  const logFile = path.join(work, 'kvmchand.log');
  const extraArgs: string[] = [];
  if (opts.config !== undefined) {
    const file = path.join(work, 'config.json');
    fs.writeFileSync(file, JSON.stringify(opts.config));
    extraArgs.push('--config', file);
  }
  const daemon = await PrivateDaemon.start({
    logFile,
    logLevel: opts.logLevel ?? 'info',
    extraArgs,
    ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
  });
  // Whatever happens to the test, its daemon does not outlive it.
  const reap = (): void => {
    if (daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill('SIGKILL');
  };
  process.once('exit', reap);
  return {
    daemon,
    runtimeDir: daemon.runtimeDir,
    logFile,
    log: () => {
      try {
        return fs.readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    stop: async () => {
      process.removeListener('exit', reap);
      await daemon.stop();
      fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

export function fdCount(pid: number | 'self'): number {
  // Listing our own fds opens one more (the directory): count only those that stay open.
  if (pid === 'self') return fdTargets('self').size;
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** What each open fd of `pid` refers to ("socket:[123]", "anon_inode:[eventfd]", ...). */
export function fdTargets(pid: number | 'self'): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(fd, fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed while we looked
    }
  }
  return out;
}

/**
 * fdTargets once the count has been steady for a moment (connections a client just closed,
 * such as PrivateDaemon's start-up probe, are gone).
 */
export async function settledFds(pid: number | 'self'): Promise<Map<string, string>> {
  let last = -1;
  let steady = 0;
  for (let i = 0; i < 200 && steady < 3; i++) {
    const n = fdCount(pid);
    steady = n === last ? steady + 1 : 0;
    last = n;
    await sleep(20);
  }
  return fdTargets(pid);
}

/**
 * Waits until `pid` has exactly the fds of `baseline` (a fdTargets snapshot) by count;
 * on timeout the error lists the fds that are new.
 */
export async function expectFdsBackTo(pid: number | 'self', baseline: Map<string, string>, timeoutMs: number, what: string): Promise<void> {
  try {
    await waitFor(() => fdCount(pid) === baseline.size, timeoutMs, what);
  } catch (err) {
    const now = fdTargets(pid);
    const extra = [...now].filter(([fd, t]) => baseline.get(fd) !== t).map(([fd, t]) => `${fd} -> ${t}`);
    const gone = [...baseline].filter(([fd, t]) => now.get(fd) !== t).map(([fd, t]) => `${fd} -> ${t}`);
    throw new Error(
      `${(err as Error).message}: ${baseline.size} fds before, ${now.size} now; new: [${extra.join(', ')}]; gone: [${gone.join(', ')}]`,
      {
        cause: err,
      },
    );
  }
}

/** Resident set size in KiB (VmRSS of /proc/<pid>/status). */
export function rssKiB(pid: number | 'self'): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m?.[1] === undefined) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

export interface RawReply {
  id: number;
  size: number;
  seq: number;
  /** The reply's err field (0 or a negative errno); NaN if the payload is shorter than 8 bytes. */
  err: number;
  data: Buffer;
  fds: number[];
}

export type RawEvent = { kind: 'reply'; reply: RawReply } | { kind: 'closed'; how: string };

/** A raw seqpacket client of the daemon: bytes go out exactly as given. */
export class RawClient {
  readonly fd: number;
  #closed = false;

  constructor(runtimeDir: string) {
    this.fd = native.connectUnix(socketPath(runtimeDir), 'seqpacket');
  }

  /** Sends one datagram; returns false if the daemon already closed the connection. */
  send(data: Uint8Array, fds: readonly number[] = []): boolean {
    try {
      native.sendmsg(this.fd, data, fds);
      return true;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'EPIPE' || code === 'ECONNRESET' || code === 'ENOTCONN') return false;
      throw err;
    }
  }

  /** The next reply, or how the connection ended; throws after `timeoutMs` of silence. */
  async next(timeoutMs = 3000): Promise<RawEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let r: RecvResult | null;
      try {
        r = native.recvmsg(this.fd, MAX_FRAME + 64, MAX_FDS);
      } catch (err) {
        return { kind: 'closed', how: (err as { code?: string }).code ?? String(err) };
      }
      if (r !== null) {
        if (r.eof) return { kind: 'closed', how: 'eof' };
        const d = r.data;
        const reply: RawReply = {
          id: d.length >= 2 ? d.readUInt16LE(0) : -1,
          size: d.length >= 4 ? d.readUInt16LE(2) : -1,
          seq: d.length >= 8 ? d.readUInt32LE(4) : -1,
          err: d.length >= 12 ? d.readInt32LE(8) : NaN,
          data: d,
          fds: r.fds,
        };
        return { kind: 'reply', reply };
      }
      if (Date.now() > deadline) throw new Error(`no reply and no close within ${timeoutMs} ms`);
      await sleep(2);
    }
  }

  /** Expects a reply (not a close) and returns it. */
  async reply(timeoutMs = 3000): Promise<RawReply> {
    const ev = await this.next(timeoutMs);
    if (ev.kind !== 'reply') throw new Error(`expected a reply, the connection was closed (${ev.how})`);
    return ev.reply;
  }

  /** Expects the daemon to close the connection, possibly after replies; returns those replies. */
  async closedByDaemon(timeoutMs = 3000): Promise<RawReply[]> {
    const replies: RawReply[] = [];
    for (;;) {
      const ev = await this.next(timeoutMs);
      if (ev.kind === 'closed') return replies;
      for (const fd of ev.reply.fds) native.close(fd);
      replies.push(ev.reply);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.close(this.fd);
  }
}

/** A frame: header {u16 id, u16 size, u32 seq} + payload, with `size` overridable for lies. */
export function rawFrame(id: number, seq: number, payload: Uint8Array = new Uint8Array(0), size = payload.length): Buffer {
  const b = Buffer.alloc(8 + payload.length);
  b.writeUInt16LE(id & 0xffff, 0);
  b.writeUInt16LE(size & 0xffff, 2);
  b.writeUInt32LE(seq >>> 0, 4);
  b.set(payload, 8);
  return b;
}

/** Little-endian u32 words as a payload. */
export function words(...w: number[]): Buffer {
  const b = Buffer.alloc(4 * w.length);
  w.forEach((v, i) => b.writeUInt32LE(v >>> 0, 4 * i));
  return b;
}
