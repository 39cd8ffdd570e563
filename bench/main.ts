/**
 * `npm run bench`: kvmchan against baselines measured in the same run
 * (docs/testing.md, "Benchmarks and targets"). Every figure is printed next to its baseline and the ratio;
 * these machines are shared VMs, so only ratios from one run mean anything.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../src/native.js';
import { Vchan } from '../src/client/index.js';
import { PrivateDaemon } from '../src/cli/private-daemon.js';
import { createRegion, ringChan, vchanChan, netChan, writeBulk, writeBatched, readExact, writeExact, type Chan } from './channels.js';
import { table } from '../src/cli/format.js';
import { crossDomainSetup } from './cross-domain-setup.js';

const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));
const QUICK = process.argv.includes('--quick');
const MiB = 1024 * 1024;
const ORDER = 20; // 1 MiB rings (docs/testing.md, "Benchmarks and targets")

type Step = { sink: number; size: number } | { echo: number; size: number } | { accept: number; base: number };

interface Peer {
  ch: Chan | null;
  done: Promise<number | null>;
}

let daemon: PrivateDaemon | null = null;
let nextPort = 100;

async function startPeer(transport: 'ring' | 'vchan' | 'net', steps: Step[], spin: number): Promise<Peer> {
  const script = JSON.stringify(steps.map((s) => ('sink' in s ? { sink: s.sink } : s)));
  const env = { ...process.env, BENCH_SPIN: String(spin) };
  const exit = (c: ReturnType<typeof spawn>): Promise<number | null> =>
    new Promise((r) => c.once('exit', (code) => { r(code); }));
  if (transport === 'ring') {
    const r = createRegion(ORDER);
    const child = spawn(process.execPath, [PEER, 'ring', script, String(ORDER)], { stdio: ['ignore', 'inherit', 'inherit', r.shm, r.b, r.a], env });
    native.close(r.shm);
    return { ch: ringChan(r.mapping, 'server', ORDER, r.a, r.b, spin), done: exit(child) };
  }
  if (transport === 'vchan') {
    daemon ??= await PrivateDaemon.start();
    if (steps.some((s) => 'accept' in s)) {
      const child = spawn(process.execPath, [PEER, 'vchan', script, daemon.runtimeDir, '0'], { stdio: 'inherit', env });
      return { ch: null, done: exit(child) };
    }
    const port = nextPort++;
    const v = await Vchan.listen({ runtimeDir: daemon.runtimeDir, port, readMin: 2 ** ORDER, writeMin: 2 ** ORDER, spin });
    const child = spawn(process.execPath, [PEER, 'vchan', script, daemon.runtimeDir, String(port)], { stdio: 'inherit', env });
    await v.waitConnected({ timeout: 20000 });
    return { ch: vchanChan(v), done: exit(child) };
  }
  const sockPath = path.join(os.tmpdir(), `kvmchan-bench-${process.pid}-${nextPort++}.sock`);
  const server = net.createServer();
  server.listen(sockPath);
  await once(server, 'listening');
  const child = spawn(process.execPath, [PEER, 'net', script, sockPath], { stdio: 'inherit', env });
  const [sock] = (await once(server, 'connection')) as [net.Socket];
  sock.setNoDelay(true);
  server.close();
  fs.rmSync(sockPath, { force: true });
  return { ch: netChan(sock), done: exit(child) };
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
  await readExact(ch, ack); // the peer is up and attached
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
  const code = await peer.done;
  if (code !== 0) throw new Error(`${transport} peer exited with ${code}`);
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
  const rounds = QUICK ? 2000 : 8000;
  const time = (copy: (off: number) => void): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) copy((i * 65536) % MiB);
    return (rounds * 65536) / (Number(process.hrtime.bigint() - t0) / 1e9);
  };
  return Math.max(
    time((off) => src.copy(dst, off, off, off + 65536)),
    time((off) => { native.copyBytes(dst, off, src, off, 65536); }),
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
  const child = spawn(process.execPath, [PEER, 'vchan', script, peerDir ?? host.runtimeDir, '0'], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_SERVER_DOMAIN: '0' },
  });
  const peer = { done: new Promise<number | null>((r) => child.once('exit', (code) => { r(code); })) };
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const v = await Vchan.listen({ runtimeDir: host.runtimeDir, port: base + i, domain: peerDomain });
    await v.waitConnected({ timeout: 20000 });
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    v.close();
  }
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
function clibBench(runtimeDir: string): ClibResult[] {
  const clib = fileURLToPath(new URL('../../clib', import.meta.url));
  const build = spawnSync('make', ['-s', '-C', clib, 'build/bench/kvmchan-bench'], { encoding: 'utf8' });
  if (build.status !== 0) {
    process.stderr.write(`C benchmark not built (${build.stderr.trim()}); skipping\n`);
    return [];
  }
  const run = spawnSync(path.join(clib, 'build', 'bench', 'kvmchan-bench'), QUICK ? ['--quick'] : [], {
    encoding: 'utf8',
    env: { ...process.env, KVMCHAN_RUNTIME_DIR: runtimeDir },
  });
  if (run.status !== 0) {
    process.stderr.write(`C benchmark failed: ${run.stderr.trim()}\n`);
    return [];
  }
  return run.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as ClibResult);
}

const gib = (bps: number): string => `${(bps / 2 ** 30).toFixed(2)} GiB/s`;
const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;

async function main(): Promise<void> {
  const scale = QUICK ? 0.125 : 1;
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
  const pings = QUICK ? 5000 : 20000;
  process.stderr.write(`kvmchan bench on ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}${QUICK ? ', quick mode' : ''}\n`);
  const memcpy = memcpyRate();
  process.stderr.write('ring (memfd, no daemon)…\n');
  const ring = await run('ring', ringBulk, pings, 100);
  const ringSleep = await run('ring', [], Math.floor(pings / 4), 0);
  process.stderr.write('vchan (through kvmchand)…\n');
  const vchan = await run('vchan', ringBulk, pings, 100);
  const vchanSleep = await run('vchan', [], Math.floor(pings / 4), 0);
  process.stderr.write('node net over a UNIX socket…\n');
  const nets = await run('net', netBulk, pings, 0);
  process.stderr.write('C libraries (libvchan-kvm vs socketpair)…\n');
  daemon ??= await PrivateDaemon.start();
  const clib = clibBench(daemon.runtimeDir);
  process.stderr.write('vchan setup latency…\n');
  const setup = await setupLatency(QUICK ? 200 : 1000, daemon);
  await daemon.stop();
  process.stderr.write('vchan setup latency to a simulated guest…\n');
  const simHost = await PrivateDaemon.start({ extraArgs: ['--simulate-guests', '1'] });
  const guest = await PrivateDaemon.start({ extraArgs: ['--guest', '--device-dir', path.join(simHost.runtimeDir, 'domains', '1')] });
  let guestSetup: number[];
  try {
    guestSetup = await setupLatency(QUICK ? 200 : 1000, simHost, guest.runtimeDir, 1);
  } finally {
    await guest.stop();
    await simHost.stop();
  }

  process.stderr.write('vchan setup latency across simulated domains…\n');
  const crossDomain = await crossDomainSetup(QUICK ? 100 : 300);

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
  rows.push(['64 B RTT p50, spinning: ring', `${pct(ring.rtt, 0.5).toFixed(2)} µs`, `net ${n50.toFixed(1)} µs`, ratio(n50, pct(ring.rtt, 0.5))]);
  rows.push(['64 B RTT p50, spinning: vchan', `${pct(vchan.rtt, 0.5).toFixed(2)} µs`, `net ${n50.toFixed(1)} µs`, ratio(n50, pct(vchan.rtt, 0.5))]);
  rows.push(['64 B RTT p50, sleeping: ring', `${pct(ringSleep.rtt, 0.5).toFixed(1)} µs`, `net ${n50.toFixed(1)} µs`, ratio(n50, pct(ringSleep.rtt, 0.5))]);
  rows.push(['64 B RTT p50, sleeping: vchan', `${pct(vchanSleep.rtt, 0.5).toFixed(1)} µs`, `net ${n50.toFixed(1)} µs`, ratio(n50, pct(vchanSleep.rtt, 0.5))]);
  rows.push(['64 B RTT p99, spinning: vchan', `${pct(vchan.rtt, 0.99).toFixed(1)} µs`, `net ${pct(nets.rtt, 0.99).toFixed(1)} µs`, ratio(pct(nets.rtt, 0.99), pct(vchan.rtt, 0.99))]);
  rows.push([`vchan setup p50 (${setup.length})`, `${pct(setup, 0.5).toFixed(2)} ms`, 'target 2 ms', ratio(2, pct(setup, 0.5))]);
  rows.push([`vchan setup p99 (${setup.length})`, `${pct(setup, 0.99).toFixed(2)} ms`, '', '']);
  rows.push([`setup host→sim. guest p50 (${guestSetup.length})`, `${pct(guestSetup, 0.5).toFixed(2)} ms`, 'target 2 ms', ratio(2, pct(guestSetup, 0.5))]);
  rows.push([`setup host→sim. guest p99`, `${pct(guestSetup, 0.99).toFixed(2)} ms`, '', '']);
  for (const size of [64, 1024, 65536]) {
    const v = clib.find((r) => r.test === 'throughput' && r.write_size === size && r.impl === 'libvchan-kvm');
    const b = clib.find((r) => r.test === 'throughput' && r.write_size === size && r.impl === 'unix-socketpair');
    if (v?.MiB_per_s === undefined || b?.MiB_per_s === undefined) continue;
    const label = size === 64 ? '64 B' : size === 1024 ? '1 KiB' : '64 KiB';
    rows.push([`C↔C ${label} writes: libvchan-kvm`, gib(v.MiB_per_s * MiB), `socketpair ${gib(b.MiB_per_s * MiB)}`, ratio(v.MiB_per_s, b.MiB_per_s)]);
  }
  rows.push(...crossDomain);
  const cv = clib.find((r) => r.test === 'pingpong' && r.impl === 'libvchan-kvm');
  const cb = clib.find((r) => r.test === 'pingpong' && r.impl === 'unix-socketpair');
  if (cv?.rtt_us !== undefined && cb?.rtt_us !== undefined) {
    rows.push(['C↔C 64 B RTT: libvchan-kvm', `${cv.rtt_us.toFixed(2)} µs`, `socketpair ${cb.rtt_us.toFixed(1)} µs`, ratio(cb.rtt_us, cv.rtt_us)]);
  }
  process.stdout.write(`${table(['benchmark', 'kvmchan', 'baseline (same run)', 'ratio'], rows)}\n`);
  process.stdout.write('ratio: kvmchan ÷ baseline for throughput, baseline ÷ kvmchan for latency (higher is better). Run inside a VM.\n');
}

await main();
