/**
 * Multi-domain fixtures for the guest integration tests (docs/testing.md tier 2): a host kvmchand
 * with simulated guests (`simulateGuests` in its config: domains 1..N, device sockets in
 * `<host runtime>/domains/<id>/`), guest daemons (`kvmchand --guest --device-dir …`) each in a
 * runtime dir of its own, log parsing, and `kvmchan status --json` run as the real CLI.
 *
 * A process "runs in" a domain by talking to that domain's daemon: a client library call with
 * `runtimeDir: guest.runtimeDir` is a call from inside that guest.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import type { StatusJson } from '../../src/cli/status-json.js';
import { domainDir } from '../../src/daemon/vmm/domain-dir.js';
import { fdTargets, sleep, startDaemon, type TestDaemon } from './daemon-fixture.js';

export const CLI_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

export interface HostOptions {
  /** Simulated guests 1..guests. */
  guests: number;
  /** Guest pairs allowed to open vchans to each other (policy.guestPairs). */
  guestPairs?: [number, number][] | 'all';
  /** Further configuration merged in (limits, pools...). */
  config?: Record<string, unknown>;
  logLevel?: string;
}

/** A host kvmchand with `guests` simulated domains. */
export function startHost(opts: HostOptions): Promise<TestDaemon> {
  return startDaemon({
    logLevel: opts.logLevel ?? 'info',
    config: {
      simulateGuests: opts.guests,
      ...(opts.guestPairs === undefined ? {} : { policy: { guestPairs: opts.guestPairs } }),
      ...opts.config,
    },
  });
}

/** `<host runtime>/domains/<id>`: what a simulated guest daemon gets as --device-dir. */
export function deviceDir(host: TestDaemon, domain: number): string {
  return domainDir(host.runtimeDir, domain);
}

export interface TestGuest {
  readonly domain: number;
  readonly daemon: PrivateDaemon;
  readonly runtimeDir: string;
  readonly logFile: string;
  log(): string;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
  /** SIGKILL and wait (runtime dir and log kept). */
  kill(): Promise<void>;
}

export interface GuestOptions {
  /** Reuse a runtime dir (a restarted guest daemon); default: a fresh temporary one. */
  runtimeDir?: string;
  logLevel?: string;
  /** Log file (appended to); default: a fresh one in a temporary directory. */
  logFile?: string;
}

/** A guest daemon for simulated domain `domain` of `host`; resolves once its socket accepts. */
export async function startGuest(host: TestDaemon, domain: number, opts: GuestOptions = {}): Promise<TestGuest> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `kvmchan-guest${domain}-`));
  const runtimeDir = opts.runtimeDir ?? path.join(work, 'run');
  const logFile = opts.logFile ?? path.join(work, 'kvmchand.log');
  const daemon = await PrivateDaemon.start({
    runtimeDir,
    logFile,
    logLevel: opts.logLevel ?? 'info',
    extraArgs: ['--guest', '--device-dir', deviceDir(host, domain)],
  });
  const alive = (): boolean => daemon.child.exitCode === null && daemon.child.signalCode === null;
  return {
    domain,
    daemon,
    runtimeDir,
    logFile,
    log: () => {
      try {
        return fs.readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    stop: async () => {
      if (alive()) await daemon.stop();
      fs.rmSync(work, { recursive: true, force: true });
    },
    kill: async () => {
      if (alive()) await daemon.kill();
    },
  };
}

/** Guest daemons for domains 1..n. */
export async function startGuests(
  host: TestDaemon,
  n: number,
  opts: Omit<GuestOptions, 'runtimeDir' | 'logFile'> = {},
): Promise<TestGuest[]> {
  const out: TestGuest[] = [];
  for (let id = 1; id <= n; id++) out.push(await startGuest(host, id, opts));
  return out;
}

export type LogEntry = Record<string, unknown> & { level: string; msg: string };

/** The pino JSON lines of a log. */
export function logEntries(text: string): LogEntry[] {
  const out: LogEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as LogEntry);
    } catch {
      // a line cut in the middle by a kill
    }
  }
  return out;
}

/** Log entries whose msg is `msg` (and that match every field of `fields`). */
export function logged(text: string, msg: string, fields: Record<string, unknown> = {}): LogEntry[] {
  return logEntries(text).filter((e) => e.msg === msg && Object.entries(fields).every(([k, v]) => e[k] === v));
}

export interface CliDomain {
  domain: number;
  flags: number;
  vchans: number;
  name: string;
}

export interface CliVchan {
  handle: number;
  serverDomain: number;
  clientDomain: number;
  port: number;
  serverState: number;
  clientState: number;
  readOrder: number;
  writeOrder: number;
  serverPid: number;
  clientPid: number;
  bytesClientToServer: number;
  bytesServerToClient: number;
}

export interface CliPool {
  pool: number;
  memberA: number;
  /** 0 for a guest's own (host) pool. */
  memberB: number;
  vectors: number;
  freeVectors: number;
  vchans: number;
  /** 0 READY, 1 PENDING, 2 RETIRED. */
  state: number;
  /** Bit 0: memberA attached, bit 1: memberB attached. */
  joined: number;
  size: number;
  freeBytes: number;
}

export interface CliStatus {
  domains: CliDomain[];
  pools: CliPool[];
  vchans: CliVchan[];
}

/** `kvmchan --runtime-dir <dir> status --json`, the real CLI in its own process. */
export async function cliStatus(runtimeDir: string): Promise<CliStatus> {
  const { stdout } = await promisify(execFile)(process.execPath, [CLI_MAIN, '--runtime-dir', runtimeDir, 'status', '--json'], {
    timeout: 30000,
    maxBuffer: 64 * 2 ** 20,
  });
  return fromStatusJson(JSON.parse(stdout) as StatusJson);
}

/**
 * The tests' view of `status --json`: the documented schema (src/cli/status-json.ts) mapped
 * back onto the daemon's listing fields the tests compare with wire-level expectations.
 * Checks the schema's version, so a change to it is noticed here first.
 */
export function fromStatusJson(json: StatusJson): CliStatus {
  assert.equal(json.version, 1, 'status --json schema version');
  const stateNumber = (s: string): number => (s === 'connected' ? 1 : s === 'waiting' ? 2 : 0);
  return {
    domains: json.domains.map((d) => ({
      domain: d.id,
      name: d.name,
      vchans: d.vchans,
      flags: (d.host ? 1 : 0) | (d.daemonUp ? 2 : 0) | (d.self ? 4 : 0),
    })),
    pools: json.pools.map((p) => ({
      pool: p.id,
      memberA: p.members[0]?.domain ?? 0,
      memberB: p.members[1]?.domain ?? 0,
      joined: p.members.reduce((bits, m, i) => bits | (m.attached ? 1 << i : 0), 0),
      state: ['ready', 'pending', 'retired'].indexOf(p.state),
      size: p.sizeBytes,
      freeBytes: p.freeBytes,
      vectors: p.vectors,
      freeVectors: p.freeVectors,
      vchans: p.vchans,
    })),
    vchans: json.vchans.map((v) => ({
      handle: v.handle,
      port: v.port,
      serverDomain: v.serverDomain,
      clientDomain: v.clientDomain,
      serverState: stateNumber(v.serverState),
      clientState: stateNumber(v.clientState),
      readOrder: Math.log2(v.ringBytes.clientToServer),
      writeOrder: Math.log2(v.ringBytes.serverToClient),
      serverPid: v.serverPid ?? 0,
      clientPid: v.clientPid ?? 0,
      bytesClientToServer: v.bytes.clientToServer,
      bytesServerToClient: v.bytes.serverToClient,
    })),
  };
}

/** p-quantile of sorted numbers (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export interface PoolCreated {
  pool: number;
  members: number[];
  vectors: number;
  size: number;
}

/** Pools the host daemon created, from its log ('pool created', info level). */
export function poolsCreated(hostLog: string): PoolCreated[] {
  return logged(hostLog, 'pool created').map((e) => ({
    pool: e['pool'] as number,
    members: e['members'] as number[],
    vectors: e['vectors'] as number,
    size: e['size'] as number,
  }));
}

/**
 * The fds the host daemon keeps for one open pool whose members are all attached
 * (src/daemon/pools/pool.ts, src/ivshmem/server.ts): the sealed memfd twice (the pool's own,
 * kept for host endpoints, and the ivshmem device's duplicate), one listening socket and one
 * accepted connection per member guest, one eventfd per vector for the host peer and for each
 * member.
 */
export function poolFds(p: Pick<PoolCreated, 'members' | 'vectors'>): number {
  return 2 + 2 * p.members.length + p.vectors * (1 + p.members.length);
}

/**
 * Waits until the host daemon holds exactly `baseline` plus the fds of `newPools` (pools are
 * kept for reuse once created: docs/pools.md). On timeout the error lists what is new.
 */
export async function expectHostFds(
  pid: number,
  baseline: Map<string, string>,
  newPools: readonly PoolCreated[],
  timeoutMs: number,
  what: string,
): Promise<void> {
  const want = baseline.size + newPools.reduce((n, p) => n + poolFds(p), 0);
  const memfds = (fds: Map<string, string>): string[] => [...fds.values()].filter((t) => t.startsWith('/memfd:kvmchan-pool-')).sort();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = fdTargets(pid);
    if (now.size === want) {
      // The difference is the new pools' memfds (two each), nothing else's.
      const added = memfds(now).filter((t) => !memfds(baseline).includes(t));
      const expected = newPools
        .flatMap((p) => [`/memfd:kvmchan-pool-${p.pool} (deleted)`, `/memfd:kvmchan-pool-${p.pool} (deleted)`])
        .sort();
      if (JSON.stringify(added) !== JSON.stringify(expected)) {
        throw new Error(`${what}: pool memfds held ${JSON.stringify(added)}, expected ${JSON.stringify(expected)}`);
      }
      return;
    }
    if (Date.now() > deadline) {
      const extra = [...now].filter(([fd, t]) => baseline.get(fd) !== t).map(([fd, t]) => `${fd} -> ${t}`);
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}: ${baseline.size} fds before, ${now.size} now, ${want} expected ` +
          `(${newPools.length} new pools: ${JSON.stringify(newPools)}); new fds: [${extra.slice(0, 50).join(', ')}${extra.length > 50 ? ', …' : ''}]`,
      );
    }
    await sleep(20);
  }
}
