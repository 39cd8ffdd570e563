/**
 * `npm run bench`: kvmchan against baselines measured in the same run
 * (docs/testing.md, "Benchmarks and targets"). Every figure is printed next to its baseline and the ratio;
 * these machines are shared VMs, so only ratios from one run mean anything.
 *
 * Options: `--quick` (an eighth of the sizes), `--smoke` (tiny sizes: checks that every
 * phase runs to the end, its figures mean nothing; what the tests run in a loop),
 * `--stall-timeout S` (default 60, or KVMCHAN_BENCH_STALL_S): a phase that makes no
 * progress for S seconds aborts the run (exit 2), naming the phase and what it waited for,
 * and leaves no process, daemon or temporary directory behind. `--vm`: run the real-guest
 * phase (bench/vm.ts; it also runs, without the flag, when QEMU and the guest image exist,
 * except in smoke mode),
 * `--no-vm`: skip it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { native } from '../src/native.js';
import { Vchan } from '../src/client/index.js';
import { PrivateDaemon } from '../src/cli/private-daemon.js';
import { createRegion, ringChan, vchanChan, netChan, writeBulk, writeBatched, readExact, writeExact, type Chan } from './channels.js';
import { table } from '../src/cli/format.js';
import { Watchdog } from './watchdog.js';
import { crossDomainSetup } from './cross-domain-setup.js';
import { vmPhase, vmSkipReason } from './vm.js';
import { shmemBench } from './shmem.js';
import { registryScale } from './registry-scale.js';

const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));
const USAGE = `usage: npm run bench [-- [--quick | --smoke] [--vm | --no-vm] [--stall-timeout S]]
  --quick            an eighth of the sizes
  --smoke            tiny sizes: checks that every phase runs to the end (figures mean nothing)
  --vm / --no-vm     run / skip the real-guest phase (default: run it when QEMU and the guest image exist, not in smoke mode)
  --stall-timeout S  abort (exit 2) when a phase makes no progress for S seconds (default 60, or KVMCHAN_BENCH_STALL_S)
  -h, --help         this text`;
let opts: { smoke?: boolean; quick?: boolean; vm?: boolean; 'no-vm'?: boolean; 'stall-timeout'?: string; help?: boolean };
try {
  opts = parseArgs({
    options: {
      smoke: { type: 'boolean' },
      quick: { type: 'boolean' },
      vm: { type: 'boolean' },
      'no-vm': { type: 'boolean' },
      'stall-timeout': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (err) {
  process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}\n`);
  process.exit(64);
}
if (opts.help === true) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
if (opts.vm === true && opts['no-vm'] === true) {
  process.stderr.write(`bench: --vm and --no-vm contradict each other\n${USAGE}\n`);
  process.exit(64);
}
const SMOKE = opts.smoke === true;
const QUICK = SMOKE || opts.quick === true;
const STALL_S = Number(opts['stall-timeout'] ?? process.env['KVMCHAN_BENCH_STALL_S'] ?? '60');
if (!(STALL_S > 0)) {
  process.stderr.write(`bench: --stall-timeout wants a number of seconds > 0, got ${String(opts['stall-timeout'] ?? STALL_S)}\n`);
  process.exit(64);
}
const dog = new Watchdog(STALL_S * 1000);
const MiB = 1024 * 1024;
const ORDER = 20; // 1 MiB rings (docs/testing.md, "Benchmarks and targets")

type Step = { sink: number; size: number } | { echo: number; size: number } | { accept: number; base: number };

interface Peer {
  ch: Chan | null;
  done: Promise<number | null>;
}

let daemon: PrivateDaemon | null = null;
let nextPort = 100;

async function startDaemon(extraArgs: string[] = []): Promise<PrivateDaemon> {
  dog.waiting('kvmchand to start');
  // Registered as soon as it is spawned: an abort while it starts must not leave it behind.
  return PrivateDaemon.start({ extraArgs, onSpawn: (d) => dog.daemon(d) });
}

async function stopDaemon(d: PrivateDaemon): Promise<void> {
  dog.waiting(`kvmchand ${d.pid} to stop`);
  await d.stop();
  dog.forgetDaemon(d);
}

/** A peer process, killed by the watchdog if the run aborts; `done` is its exit code. */
function spawnPeer(args: string[], opts: Parameters<typeof spawn>[2]): { child: ChildProcess; done: Promise<number | null> } {
  const child = dog.child(spawn(process.execPath, [PEER, ...args], opts));
  const done = new Promise<number | null>((r) => {
    child.once('exit', (code, signal) => {
      r(signal === null ? code : -1);
    });
    child.once('error', () => {
      r(null);
    });
  });
  return { child, done };
}

/** `p`, or a rejection as soon as the peer exits first (then nothing would ever resolve `p`). */
async function unlessExited<T>(p: Promise<T>, peer: Promise<number | null>, what: string): Promise<T> {
  return Promise.race([
    p,
    peer.then((code) => {
      throw new Error(`peer exited (${String(code)}) while waiting for ${what}`);
    }),
  ]);
}

async function startPeer(transport: 'ring' | 'vchan' | 'net', steps: Step[], spin: number): Promise<Peer> {
  const script = JSON.stringify(steps.map((s) => ('sink' in s ? { sink: s.sink } : s)));
  const env = { ...process.env, BENCH_SPIN: String(spin) };
  if (transport === 'ring') {
    const r = createRegion(ORDER);
    const { done } = spawnPeer(['ring', script, String(ORDER)], { stdio: ['ignore', 'inherit', 'inherit', r.shm, r.b, r.a], env });
    native.close(r.shm);
    return { ch: dog.watch(ringChan(r.mapping, 'server', ORDER, r.a, r.b, spin), 'ring'), done };
  }
  if (transport === 'vchan') {
    daemon ??= await startDaemon();
    const port = nextPort++;
    const v = await Vchan.listen({ runtimeDir: daemon.runtimeDir, port, readMin: 2 ** ORDER, writeMin: 2 ** ORDER, spin });
    const { done } = spawnPeer(['vchan', script, daemon.runtimeDir, String(port)], { stdio: 'inherit', env });
    dog.waiting(`the vchan peer to connect to port ${port}`);
    try {
      await unlessExited(v.waitConnected({ timeout: STALL_S * 2000 }), done, `a client on port ${port}`);
    } catch (err) {
      v.close();
      throw err;
    }
    return { ch: dog.watch(vchanChan(v), 'vchan'), done };
  }
  const sockPath = dog.path(path.join(os.tmpdir(), `kvmchan-bench-${process.pid}-${nextPort++}.sock`));
  const server = net.createServer();
  try {
    server.listen(sockPath);
    await once(server, 'listening');
    const { done } = spawnPeer(['net', script, sockPath], { stdio: 'inherit', env });
    dog.waiting('the net peer to connect');
    const [sock] = (await unlessExited(once(server, 'connection'), done, 'the net peer to connect')) as [net.Socket];
    sock.setNoDelay(true);
    return { ch: dog.watch(netChan(sock), 'net'), done };
  } finally {
    server.close();
    fs.rmSync(sockPath, { force: true });
    dog.forgetPath(sockPath);
  }
}

/** Bulk steps: [write size, total bytes, messages per batch (1 = one call per write)]. */
type Bulk = [size: number, total: number, batch: number];

interface Results {
  bulk: Map<string, number>; // `${size}x${batch}` → bytes/s
  rtt: number[]; // µs samples
}

async function run(transport: 'ring' | 'vchan' | 'net', bulk: Bulk[], pings: number, spin: number): Promise<Results> {
  const steps: Step[] = [...bulk.map(([size, total]) => ({ sink: total, size })), ...(pings > 0 ? [{ echo: pings, size: 64 }] : [])];
  const peer = await startPeer(transport, steps, spin);
  const ch = peer.ch!;
  const res: Results = { bulk: new Map(), rtt: [] };
  const ack = new Uint8Array(1);
  await unlessExited(readExact(ch, ack), peer.done, 'the peer to attach'); // the peer is up and attached
  for (const [size, total, batch] of bulk) {
    const t0 = process.hrtime.bigint();
    if (batch > 1) await writeBatched(ch, total, size, batch);
    else await writeBulk(ch, total, size);
    await readExact(ch, ack);
    res.bulk.set(`${size}x${batch}`, total / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  const msg = new Uint8Array(64);
  for (let i = 0; i < pings; i++) {
    const t0 = process.hrtime.bigint();
    await writeExact(ch, msg);
    await readExact(ch, msg);
    res.rtt.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  ch.close();
  dog.waiting(`the ${transport} peer to exit`);
  const code = await peer.done;
  if (code !== 0) throw new Error(`${transport} peer exited with ${String(code)}`);
  return res;
}

function pct(samples: number[], q: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

/**
 * Single-core copy bandwidth, cache-hot, 64 KiB blocks: the best of Buffer#copy (glibc
 * memcpy) and the addon's copy loop (which avoids memcpy's rep-movsb cliff on AMD Zen).
 */
function memcpyRate(): number {
  const src = Buffer.alloc(MiB, 1);
  const dst = Buffer.alloc(MiB);
  const rounds = SMOKE ? 100 : QUICK ? 2000 : 8000;
  const time = (copy: (off: number) => void): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) copy((i * 65536) % MiB);
    return (rounds * 65536) / (Number(process.hrtime.bigint() - t0) / 1e9);
  };
  return Math.max(
    time((off) => src.copy(dst, off, off, off + 65536)),
    time((off) => {
      native.copyBytes(dst, off, src, off, 65536);
    }),
  );
}

/**
 * server_init → client connected, with the client already waiting in another
 * process (docs/testing.md, "Benchmarks and targets"). `peerDir`/`peerDomain`: where the client runs
 * (default: a host process) — a simulated guest measures the cross-domain path.
 */
async function setupLatency(n: number, host: PrivateDaemon, peerDir?: string, peerDomain = 0): Promise<number[]> {
  const base = 50_000;
  const script = JSON.stringify([{ accept: n, base }]);
  const peer = spawnPeer(['vchan', script, peerDir ?? host.runtimeDir, '0'], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_SERVER_DOMAIN: '0' },
  });
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    dog.waiting(`VCHAN_SERVER_INIT on port ${base + i}`);
    const v = await unlessExited(
      Vchan.listen({ runtimeDir: host.runtimeDir, port: base + i, domain: peerDomain }),
      peer.done,
      `server_init on port ${base + i}`,
    );
    dog.waiting(`the client of port ${base + i} to connect`);
    try {
      await unlessExited(v.waitConnected({ timeout: STALL_S * 2000 }), peer.done, `the client of port ${base + i}`);
    } finally {
      v.close();
    }
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    dog.progress();
  }
  dog.waiting('the setup peer to exit');
  if ((await peer.done) !== 0) throw new Error('setup peer failed');
  return samples;
}

interface ClibResult {
  test: 'throughput' | 'pingpong';
  impl: string;
  write_size?: number;
  MiB_per_s?: number;
  rtt_us?: number;
}

/** C↔C through libvchan-kvm against a C socketpair, from clib/bench, same run. */
async function clibBench(runtimeDir: string): Promise<ClibResult[]> {
  const clib = fileURLToPath(new URL('../../clib', import.meta.url));
  // Under the lock the tests take around clib builds (they may be building it right now).
  const make = ['make', '-s', '-C', clib, 'build/bench/kvmchan-bench'];
  fs.mkdirSync(path.join(clib, 'build'), { recursive: true });
  let build = spawnSync('flock', [path.join(clib, 'build', '.make.lock'), ...make], { encoding: 'utf8' });
  if (build.error !== undefined) build = spawnSync(make[0]!, make.slice(1), { encoding: 'utf8' });
  if (build.status !== 0) {
    process.stderr.write(`C benchmark not built (${build.stderr.trim()}); skipping\n`);
    return [];
  }
  // Asynchronous, in its own process group (it forks its peers): the watchdog keeps
  // running, counts each output line as progress and can kill the bench and its children.
  const args = [
    '--progress',
    ...(SMOKE ? ['--seconds', '0', '--reps', '1', '--probe-writes', '16', '--min-round-trips', '200'] : QUICK ? ['--quick'] : []),
  ];
  const child = dog.child(
    spawn(path.join(clib, 'build', 'bench', 'kvmchan-bench'), args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, KVMCHAN_RUNTIME_DIR: runtimeDir },
    }),
    true,
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    dog.progress();
  });
  // Its stderr: a "progress <test> <impl> <size> <run>" line as each run starts, or errors.
  let partial = '';
  child.stderr.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith('progress ')) {
        dog.progress();
        dog.waiting(`the C benchmark (clib/build/bench/kvmchan-bench) to finish ${line.slice(9)}`);
      } else stderr += `${line}\n`;
    }
  });
  dog.waiting('the C benchmark (clib/build/bench/kvmchan-bench) to start');
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) {
    process.stderr.write(`C benchmark failed: ${(stderr + partial).trim()}\n`);
    return [];
  }
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as ClibResult);
}

const gib = (bps: number): string => `${(bps / 2 ** 30).toFixed(2)} GiB/s`;
const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;

async function main(): Promise<void> {
  const scale = SMOKE ? 1 / 256 : QUICK ? 0.125 : 1;
  const ringBulk: Bulk[] = [
    [64, 64 * MiB * scale, 1],
    [64, 256 * MiB * scale, 64],
    [1024, 1024 * MiB * scale, 1],
    [65536, 4096 * MiB * scale, 1],
  ];
  const netBulk: Bulk[] = [
    [64, 32 * MiB * scale, 1],
    [64, 64 * MiB * scale, 64],
    [1024, 512 * MiB * scale, 1],
    [65536, 2048 * MiB * scale, 1],
  ];
  const pings = SMOKE ? 200 : QUICK ? 5000 : 20000;
  const setups = SMOKE ? 10 : QUICK ? 200 : 1000;
  const mode = SMOKE ? ', smoke mode (figures mean nothing)' : QUICK ? ', quick mode' : '';
  process.stderr.write(`kvmchan bench on ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}${mode}\n`);
  dog.start();
  const phase = (name: string): void => {
    process.stderr.write(`${name}\n`);
    dog.phase(name);
  };
  phase('memcpy baseline…');
  const memcpy = memcpyRate();
  phase('ring (memfd, no daemon)…');
  const ring = await run('ring', ringBulk, pings, 100);
  const ringSleep = await run('ring', [], Math.floor(pings / 4), 0);
  phase('vchan (through kvmchand)…');
  const vchan = await run('vchan', ringBulk, pings, 100);
  const vchanSleep = await run('vchan', [], Math.floor(pings / 4), 0);
  phase('node net over a UNIX socket…');
  const nets = await run('net', netBulk, pings, 0);
  phase('C libraries (libvchan-kvm vs socketpair)…');
  daemon ??= await startDaemon();
  const clib = await clibBench(daemon.runtimeDir);
  phase('vchan setup latency…');
  const setup = await setupLatency(setups, daemon);
  phase('shared-memory regions: 32 MiB under one id, per page, memfd + mmap…');
  const shm = await shmemBench(daemon.runtimeDir, SMOKE ? 2 : QUICK ? 20 : 100, SMOKE ? 1 : QUICK ? 2 : 5, dog);
  await stopDaemon(daemon);
  daemon = null;
  phase('vchan setup latency to a simulated guest…');
  const simHost = await startDaemon(['--simulate-guests', '1']);
  const guest = await startDaemon(['--guest', '--device-dir', path.join(simHost.runtimeDir, 'domains', '1')]);
  const guestSetup = await setupLatency(setups, simHost, guest.runtimeDir, 1);
  await stopDaemon(guest);
  await stopDaemon(simHost);
  const existing = SMOKE ? 200 : 10_000;
  phase(`setup+teardown with no vchan and with ${existing} vchans held…`);
  const registry = await registryScale({ dog, existing, cycles: SMOKE ? 20 : QUICK ? 300 : 1000, startDaemon, stopDaemon });
  if (registry.limitedBy !== null) process.stderr.write(`  held ${registry.held} vchans, not ${existing}: ${registry.limitedBy}\n`);
  let vmRows: string[][] = [];
  const forceVm = opts.vm === true;
  const vmSkip = opts['no-vm'] === true ? '--no-vm' : SMOKE && !forceVm ? 'smoke mode (add --vm to include it)' : vmSkipReason(forceVm);
  if (vmSkip === null) {
    phase('real guest under QEMU: vchan vs TCP over virtio-net…');
    vmRows = await vmPhase({ dog, smoke: SMOKE, quick: QUICK, forced: forceVm, startDaemon, stopDaemon });
  } else {
    process.stderr.write(`real guest phase skipped: ${vmSkip}\n`);
    if (forceVm) throw new Error(`--vm: ${vmSkip}`);
  }
  phase('vchan setup latency across simulated domains…');
  const crossDomain = await crossDomainSetup(SMOKE ? 10 : QUICK ? 100 : 300, dog);
  dog.stop();

  const rows: string[][] = [];
  for (const [size, , batch] of ringBulk) {
    const key = `${size}x${batch}`;
    const base = nets.bulk.get(key)!;
    const label = (size === 64 ? '64 B' : size === 1024 ? '1 KiB' : '64 KiB') + (batch > 1 ? ` ×${batch} batched` : '');
    const r = ring.bulk.get(key)!;
    const v = vchan.bulk.get(key)!;
    if (size === 64) {
      const m = (x: number): string => `${(x / 64 / 1e6).toFixed(2)} M msg/s`;
      rows.push([`${label} messages: ring`, m(r), `net ${m(base)}`, ratio(r, base)]);
      rows.push([`${label} messages: vchan`, m(v), `net ${m(base)}`, ratio(v, base)]);
      continue;
    }
    rows.push([`bulk ${label} writes: ring`, gib(r), `net ${gib(base)}`, ratio(r, base)]);
    rows.push([`bulk ${label} writes: vchan`, gib(v), `net ${gib(base)}`, ratio(v, base)]);
    if (size === 65536) {
      rows.push([`  64 KiB vchan vs memcpy`, gib(v), `memcpy ${gib(memcpy)}`, `${((v / memcpy) * 100).toFixed(0)} %`]);
    }
  }
  const n50 = pct(nets.rtt, 0.5);
  rows.push([
    '64 B RTT p50, spinning: ring',
    `${pct(ring.rtt, 0.5).toFixed(2)} µs`,
    `net ${n50.toFixed(1)} µs`,
    ratio(n50, pct(ring.rtt, 0.5)),
  ]);
  rows.push([
    '64 B RTT p50, spinning: vchan',
    `${pct(vchan.rtt, 0.5).toFixed(2)} µs`,
    `net ${n50.toFixed(1)} µs`,
    ratio(n50, pct(vchan.rtt, 0.5)),
  ]);
  rows.push([
    '64 B RTT p50, sleeping: ring',
    `${pct(ringSleep.rtt, 0.5).toFixed(1)} µs`,
    `net ${n50.toFixed(1)} µs`,
    ratio(n50, pct(ringSleep.rtt, 0.5)),
  ]);
  rows.push([
    '64 B RTT p50, sleeping: vchan',
    `${pct(vchanSleep.rtt, 0.5).toFixed(1)} µs`,
    `net ${n50.toFixed(1)} µs`,
    ratio(n50, pct(vchanSleep.rtt, 0.5)),
  ]);
  rows.push([
    '64 B RTT p99, spinning: vchan',
    `${pct(vchan.rtt, 0.99).toFixed(1)} µs`,
    `net ${pct(nets.rtt, 0.99).toFixed(1)} µs`,
    ratio(pct(nets.rtt, 0.99), pct(vchan.rtt, 0.99)),
  ]);
  rows.push([`vchan setup p50 (${setup.length})`, `${pct(setup, 0.5).toFixed(2)} ms`, 'target 2 ms', ratio(2, pct(setup, 0.5))]);
  rows.push([`vchan setup p99 (${setup.length})`, `${pct(setup, 0.99).toFixed(2)} ms`, '', '']);
  rows.push([
    `setup host→sim. guest p50 (${guestSetup.length})`,
    `${pct(guestSetup, 0.5).toFixed(2)} ms`,
    'target 2 ms',
    ratio(2, pct(guestSetup, 0.5)),
  ]);
  rows.push([`setup host→sim. guest p99`, `${pct(guestSetup, 0.99).toFixed(2)} ms`, '', '']);
  for (const size of [64, 1024, 65536]) {
    const v = clib.find((r) => r.test === 'throughput' && r.write_size === size && r.impl === 'libvchan-kvm');
    const b = clib.find((r) => r.test === 'throughput' && r.write_size === size && r.impl === 'unix-socketpair');
    if (v?.MiB_per_s === undefined || b?.MiB_per_s === undefined) continue;
    const label = size === 64 ? '64 B' : size === 1024 ? '1 KiB' : '64 KiB';
    rows.push([
      `C↔C ${label} writes: libvchan-kvm`,
      gib(v.MiB_per_s * MiB),
      `socketpair ${gib(b.MiB_per_s * MiB)}`,
      ratio(v.MiB_per_s, b.MiB_per_s),
    ]);
  }
  rows.push(...crossDomain);
  const heldN = registry.held.toLocaleString('en-US');
  for (const q of [0.5, 0.99]) {
    const e = pct(registry.empty, q);
    const l = pct(registry.loaded, q);
    const label =
      q === 0.5 ? `setup+teardown p50, ${heldN} vchans held (${registry.loaded.length})` : `setup+teardown p99, ${heldN} vchans held`;
    rows.push([label, `${l.toFixed(2)} ms`, `none held ${e.toFixed(2)} ms`, ratio(e, l)]);
  }
  const shmRow = (label: string, q: number): void => {
    const v = pct(shm.region, q);
    const b = pct(shm.memfd, q);
    rows.push([`${label} (${shm.region.length})`, `${v.toFixed(2)} ms`, `memfd+2×mmap ${b.toFixed(3)} ms`, ratio(b, v)]);
  };
  shmRow('shm region 32 MiB share+map p50', 0.5);
  shmRow('shm region 32 MiB share+map p99', 0.99);
  rows.push([
    `  same 32 MiB, one id per 4 KiB page p50 (${shm.perPage.length})`,
    `${pct(shm.perPage, 0.5).toFixed(0)} ms`,
    `one id ${pct(shm.region, 0.5).toFixed(2)} ms`,
    ratio(pct(shm.region, 0.5), pct(shm.perPage, 0.5)),
  ]);
  const cv = clib.find((r) => r.test === 'pingpong' && r.impl === 'libvchan-kvm');
  const cb = clib.find((r) => r.test === 'pingpong' && r.impl === 'unix-socketpair');
  if (cv?.rtt_us !== undefined && cb?.rtt_us !== undefined) {
    rows.push([
      'C↔C 64 B RTT: libvchan-kvm',
      `${cv.rtt_us.toFixed(2)} µs`,
      `socketpair ${cb.rtt_us.toFixed(1)} µs`,
      ratio(cb.rtt_us, cv.rtt_us),
    ]);
  }
  rows.push(...vmRows);
  process.stdout.write(`${table(['benchmark', 'kvmchan', 'baseline (same run)', 'ratio'], rows)}\n`);
  process.stdout.write('ratio: kvmchan ÷ baseline for throughput, baseline ÷ kvmchan for latency (higher is better). Run inside a VM.\n');
}

try {
  await main();
} catch (err) {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
} finally {
  // Whatever is still running or lying around (after an error): killed and removed.
  dog.cleanUp();
}
