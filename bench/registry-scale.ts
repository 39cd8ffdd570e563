/**
 * Setup cost against the number of vchans the daemon already holds (docs/testing.md,
 * "Benchmarks and targets": setup cost independent of the number of vchans). One vchan is set
 * up and torn down through the daemon — VCHAN_SERVER_INIT on one connection, VCHAN_CLIENT_INIT
 * on another, then VCHAN_CLOSE on both, each waiting for its reply — alternately on a daemon
 * that holds no other vchan and on one that holds `existing` connected vchans (server and
 * client) on other connections. The ratio of the two is the figure: ≈ 1× when nothing in the
 * daemon scans every vchan.
 *
 * The existing vchans are host↔host. Once its client attached such a vchan costs the daemon no
 * fd of its own (the memfd and eventfds went to the endpoints, docs/pools.md §1): holding
 * 10,000 costs only the few connections they live on, well below the project machine's hard
 * RLIMIT_NOFILE (20,000), plus 3 fds per vchan still waiting for its client while filling. A
 * daemon whose hard limit is lower still holds what fits and its rows say how many. A
 * bench-only configuration lifts the per-connection and per-uid vchan limits (root is exempt
 * from the per-uid quotas anyway, docs/security.md "Quotas") so a few connections hold them all.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../src/native.js';
import { DaemonConnection } from '../src/client/daemon-connection.js';
import type { PrivateDaemon } from '../src/cli/private-daemon.js';
import { Command } from '../src/protocol/constants.js';
import type { Watchdog } from './watchdog.js';

export interface RegistryScaleOptions {
  dog: Watchdog;
  /** vchans held while measuring the second series (10,000 in a real run). */
  existing: number;
  /** setup+teardown cycles per series (after 50 not counted: JIT, caches). */
  cycles: number;
  startDaemon: (args: string[]) => Promise<PrivateDaemon>;
  stopDaemon: (d: PrivateDaemon) => Promise<void>;
}

export interface RegistryScaleResult {
  /** vchans actually held for the second series (fewer than asked when the fd limit forbids). */
  held: number;
  /** why fewer were held, if they were */
  limitedBy: string | null;
  /** milliseconds per setup+teardown, with 0 and with `held` other vchans */
  empty: number[];
  loaded: number[];
}

/** fds the daemon needs besides the held vchans' connections: its own, the measured vchan's. */
const FD_MARGIN = 512;
/** Requests in flight per connection while filling (the daemon works on at most 64 at once). */
const WINDOW = 48;
/** Held vchans per connection pair while filling. */
const PER_CONNECTION = 4096;

/**
 * fds the daemon needs to hold `n` connected host↔host vchans: two connections per
 * PER_CONNECTION of them, and 3 fds (memfd, 2 eventfds) for each of the WINDOW vchans whose
 * client has not attached yet while filling.
 */
const fdsToHold = (n: number): number => FD_MARGIN + 3 * WINDOW + 2 * Math.ceil(n / PER_CONNECTION);

/** The hard RLIMIT_NOFILE of `pid` (ours by default). */
function hardNofile(pid = process.pid): number {
  const r = spawnSync('prlimit', ['--pid', String(pid), '--nofile', '--output', 'HARD', '--noheadings'], { encoding: 'utf8' });
  const n = Number(r.stdout.trim());
  return r.status === 0 && Number.isFinite(n) ? n : 20_000;
}

/** One vchan's setup and teardown on connections `server` and `client`, in ms. */
async function cycle(server: DaemonConnection, client: DaemonConnection, port: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const s = await server.request(Command.VCHAN_SERVER_INIT, { peerDomain: 0, port, readMin: 1024, writeMin: 1024 });
  for (const fd of s.fds) native.close(fd);
  const c = await client.request(Command.VCHAN_CLIENT_INIT, { serverDomain: 0, port, timeoutMs: 0, flags: 0 });
  for (const fd of c.fds) native.close(fd);
  await client.request(Command.VCHAN_CLOSE, { handle: c.body.handle });
  await server.request(Command.VCHAN_CLOSE, { handle: s.body.handle });
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * `n` cycles on each daemon, alternating (after 50 each not counted: JIT, caches), so that the
 * load of a shared machine falls on both series alike. Milliseconds per cycle, per daemon.
 */
async function alternate(dog: Watchdog, dirs: readonly string[], n: number, basePort: number): Promise<number[][]> {
  const pairs: [DaemonConnection, DaemonConnection][] = [];
  try {
    for (const dir of dirs) pairs.push([await DaemonConnection.open(dir), await DaemonConnection.open(dir)]);
    const out = dirs.map((): number[] => []);
    for (let i = -50; i < n; i++) {
      for (const [k, [server, client]] of pairs.entries()) {
        dog.waiting(`setup+teardown ${i + 50} on daemon ${k + 1} of ${dirs.length}`);
        const ms = await cycle(server, client, basePort + i + 50);
        if (i >= 0) out[k]!.push(ms);
        dog.progress();
      }
    }
    return out;
  } finally {
    for (const [server, client] of pairs) {
      server.close();
      client.close();
    }
  }
}

/**
 * `count` connected vchans on ports from `basePort`, on connections of `perConnection` vchans
 * each; returns those connections (the vchans live as long as they do).
 */
async function fill(
  dog: Watchdog,
  runtimeDir: string,
  count: number,
  basePort: number,
  perConnection: number,
): Promise<DaemonConnection[]> {
  const conns: DaemonConnection[] = [];
  try {
    for (let first = 0; first < count; first += perConnection) {
      const server = await DaemonConnection.open(runtimeDir);
      conns.push(server);
      const client = await DaemonConnection.open(runtimeDir);
      conns.push(client);
      const last = Math.min(count, first + perConnection);
      for (let w = first; w < last; w += WINDOW) {
        const ports = Array.from({ length: Math.min(WINDOW, last - w) }, (_, k) => basePort + w + k);
        dog.waiting(`vchans ${w}..${w + ports.length - 1} of ${count} to be set up`);
        const grants = await Promise.all([
          ...ports.map((port) => server.request(Command.VCHAN_SERVER_INIT, { peerDomain: 0, port, readMin: 1024, writeMin: 1024 })),
          ...ports.map((port) => client.request(Command.VCHAN_CLIENT_INIT, { serverDomain: 0, port, timeoutMs: 10_000, flags: 0 })),
        ]);
        for (const g of grants) for (const fd of g.fds) native.close(fd);
        dog.progress();
      }
    }
    return conns;
  } catch (err) {
    for (const c of conns) c.close();
    throw err;
  }
}

export async function registryScale(o: RegistryScaleOptions): Promise<RegistryScaleResult> {
  const dir = o.dog.path(fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-bench-scale-')));
  const daemons: PrivateDaemon[] = [];
  try {
    const config = path.join(dir, 'config.json');
    fs.writeFileSync(
      config,
      JSON.stringify({
        limits: {
          maxVchans: o.existing + 1024,
          maxVchansPerConnection: PER_CONNECTION,
          maxVchansPerUid: 2 * o.existing + 1024,
          maxShmBytesPerUid: 2 ** 40,
        },
      }),
    );
    // Two daemons, same configuration: one stays empty, the other holds the vchans.
    for (let i = 0; i < 2; i++) daemons.push(await o.startDaemon(['--config', config]));
    const [empty, loaded] = daemons as [PrivateDaemon, PrivateDaemon];
    // The daemon raised its soft limit to the hard one at start.
    const hard = hardNofile(loaded.pid);
    let held = o.existing;
    let limitedBy: string | null = null;
    if (fdsToHold(held) > hard) {
      while (held > 0 && fdsToHold(held) > hard) held = Math.max(0, held - PER_CONNECTION);
      limitedBy = `the hard RLIMIT_NOFILE of ${hard} fds (${fdsToHold(o.existing)} needed)`;
    }
    const conns = await fill(o.dog, loaded.runtimeDir, held, 2_000_000, PER_CONNECTION);
    try {
      const [e, l] = await alternate(o.dog, [empty.runtimeDir, loaded.runtimeDir], o.cycles, 1_000_000);
      return { held, limitedBy, empty: e!, loaded: l! };
    } finally {
      for (const c of conns) c.close();
    }
  } finally {
    for (const d of daemons) await o.stopDaemon(d);
    fs.rmSync(dir, { recursive: true, force: true });
    o.dog.forgetPath(dir);
  }
}
