/**
 * `kvmchan demo`: the embedded default main job. A private kvmchand in a
 * temporary runtime dir (with `--guests N`, also N simulated guests, each with
 * its own guest daemon), a vchan between this process and a second one, a bulk
 * transfer checked by SHA-256, a 64-byte round-trip measurement, and cleanup.
 */
import type { Command } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Vchan } from '../../client/index.js';
import { PrivateDaemon } from '../private-daemon.js';
import { Progress, bytes, rate } from '../format.js';
import { parseInteger } from '../args.js';
import { addCleanup, cleanupOnSignals } from '../conventions.js';
import { sizeOption } from '../options.js';
import { KvmchanError } from '../../errors.js';

const PEER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'demo-peer.js');

interface DemoOpts {
  size: number;
  ring: number;
  pings: number;
  guests: number;
}

/** One vchan of the demo: we serve in `serverDir` toward `peerDomain`; the peer process connects from `clientDir`. */
interface Leg {
  title: string;
  serverDir: string;
  serverDomain: number;
  clientDir: string;
  clientDomain: number;
}

/** Send `size` bytes of varying random data; the peer answers with its count and SHA-256. Returns seconds. */
export async function sendChecked(
  server: Vchan,
  size: number,
  out: NodeJS.WriteStream,
  err: NodeJS.WriteStream,
  label = '',
): Promise<number> {
  const chunk = Buffer.allocUnsafe(64 * 1024);
  randomFillSync(chunk);
  const hash = createHash('sha256');
  const progress = new Progress(err, size, 'transfer');
  const t0 = process.hrtime.bigint();
  for (let sent = 0; sent < size;) {
    const n = Math.min(chunk.length, size - sent);
    const piece = chunk.subarray(0, n);
    hash.update(piece);
    await server.write(piece);
    sent += n;
    chunk[0] = (chunk[0]! + 1) & 0xff; // vary the data so a stuck ring cannot pass the check
    progress.update(sent);
  }
  const ack = await server.recv(40);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  progress.done();
  if (ack === null) throw new KvmchanError('peer closed before acknowledging', 'KVMCHAN_E_DEMO');
  const digest = hash.digest();
  const okHash = ack.subarray(8).equals(digest);
  const shown = label === '' ? '' : ` ${digest.toString('hex')}`;
  out.write(
    `  ${label}moved ${bytes(size)} in ${secs.toFixed(3)} s: ${rate(size, secs)} (both ends hashing); SHA-256${shown} ${okHash ? 'matches' : 'MISMATCH'}\n`,
  );
  if (!okHash) throw new KvmchanError('data corrupted in transit', 'KVMCHAN_E_DEMO');
  return secs;
}

/** Receive `size` bytes; the peer then sends its count and SHA-256. Returns seconds. */
export async function receiveChecked(
  server: Vchan,
  size: number,
  out: NodeJS.WriteStream,
  err: NodeJS.WriteStream,
  label = '',
): Promise<number> {
  const buf = Buffer.allocUnsafe(256 * 1024);
  const hash = createHash('sha256');
  const progress = new Progress(err, size, 'transfer');
  const t0 = process.hrtime.bigint();
  for (let got = 0; got < size;) {
    const n = await server.readInto(buf.subarray(0, Math.min(buf.length, size - got)));
    if (n < 0) throw new KvmchanError('peer closed during the transfer', 'KVMCHAN_E_DEMO');
    hash.update(buf.subarray(0, n));
    got += n;
    progress.update(got);
  }
  const trailer = await server.recv(40);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  progress.done();
  if (trailer === null) throw new KvmchanError('peer closed before sending its SHA-256', 'KVMCHAN_E_DEMO');
  const digest = hash.digest();
  const okHash = trailer.subarray(8).equals(digest);
  out.write(
    `  ${label}moved ${bytes(size)} in ${secs.toFixed(3)} s: ${rate(size, secs)} (both ends hashing); SHA-256 ${digest.toString('hex')} ${okHash ? 'matches' : 'MISMATCH'}\n`,
  );
  if (!okHash) throw new KvmchanError('data corrupted in transit', 'KVMCHAN_E_DEMO');
  return secs;
}

/** Time `n` 64-byte round trips (the peer echoes); samples in µs. */
export async function timePings(server: Vchan, n: number): Promise<number[]> {
  const pkt = Buffer.alloc(64);
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = process.hrtime.bigint();
    await server.send(pkt);
    if ((await server.recvInto(pkt)) < 0) throw new KvmchanError('peer closed during ping', 'KVMCHAN_E_DEMO');
    samples.push(Number(process.hrtime.bigint() - s) / 1000);
  }
  return samples;
}

/** "p50 X µs, p99 Y µs" of µs samples. */
export function percentiles(samples: number[]): string {
  const sorted = [...samples].sort((a, b) => a - b);
  const p = (q: number): string => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(1);
  return `p50 ${p(0.5)} µs, p99 ${p(0.99)} µs`;
}

async function runLeg(
  leg: Leg,
  opts: DemoOpts,
  out: NodeJS.WriteStream,
  err: NodeJS.WriteStream,
  children: Set<ChildProcess>,
): Promise<void> {
  const port = 1;
  const setupStart = process.hrtime.bigint();
  const server = await Vchan.listen({ port, domain: leg.clientDomain, runtimeDir: leg.serverDir, readMin: opts.ring, writeMin: opts.ring });
  const child = spawn(
    process.execPath,
    [PEER, leg.clientDir, String(port), String(opts.size), String(opts.pings), String(leg.serverDomain)],
    {
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
  children.add(child);
  const peerExit = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  try {
    await server.waitConnected({ timeout: 15000 });
    const setupMs = Number(process.hrtime.bigint() - setupStart) / 1e6;
    out.write(
      `${leg.title}: vchan up between pid ${process.pid} and pid ${child.pid ?? '?'} (rings ${bytes(server.writeSize)} each way, setup incl. process start ${setupMs.toFixed(1)} ms)\n`,
    );

    await sendChecked(server, opts.size, out, err);
    const samples = await timePings(server, opts.pings);
    if (samples.length > 0) out.write(`  64-byte round trip over ${samples.length} pings: ${percentiles(samples)}\n`);
    server.close();
    const code = await peerExit;
    if (code !== 0) throw new KvmchanError(`demo peer exited with ${code}`, 'KVMCHAN_E_DEMO');
  } finally {
    server.close();
    if (child.exitCode === null) child.kill('SIGKILL');
    await peerExit;
  }
}

export async function runDemo(opts: DemoOpts, out: NodeJS.WriteStream, err: NodeJS.WriteStream): Promise<void> {
  const daemons: PrivateDaemon[] = [];
  const children = new Set<ChildProcess>();
  let configDir: string | undefined;
  // Every exit path removes what the demo created: the end, an error, Ctrl-C/SIGTERM and a
  // closed output (`kvmchan demo | head`, docs/cli.md "Conventions").
  let cleaned: Promise<void> | undefined;
  // A daemon still starting when the end comes is stopped as soon as it is up.
  const starting = new Set<Promise<PrivateDaemon>>();
  const startDaemon = async (extraArgs: string[]): Promise<PrivateDaemon> => {
    const p = PrivateDaemon.start({ extraArgs });
    starting.add(p);
    try {
      const daemon = await p;
      daemons.push(daemon);
      return daemon;
    } finally {
      starting.delete(p);
    }
  };
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      for (const c of children) c.kill('SIGKILL');
      await Promise.allSettled([...starting]);
      for (const d of daemons.reverse()) await d.stop();
      if (configDir !== undefined) fs.rmSync(configDir, { recursive: true, force: true });
    })());
  const unregister = addCleanup(cleanup);
  const unsignal = cleanupOnSignals();
  try {
    const hostArgs: string[] = [];
    if (opts.guests > 0) {
      // Simulated guests, and a policy that lets them talk to each other (docs/security.md, "Policy").
      configDir = fs.mkdtempSync(path.join(fs.realpathSync(process.env['TMPDIR'] ?? '/tmp'), 'kvmchan-demo-'));
      const cfg = path.join(configDir, 'kvmchand.json');
      fs.writeFileSync(cfg, JSON.stringify({ policy: { guestPairs: 'all' } }));
      hostArgs.push('--simulate-guests', String(opts.guests), '--config', cfg);
    }
    const host = await startDaemon(hostArgs);
    out.write(`kvmchand started (pid ${host.pid}) in ${host.runtimeDir}\n`);
    const guestDirs: string[] = [];
    for (let id = 1; id <= opts.guests; id++) {
      const g = await startDaemon(['--guest', '--device-dir', path.join(host.runtimeDir, 'domains', String(id))]);
      guestDirs.push(g.runtimeDir);
      out.write(`guest daemon for domain ${id} started (pid ${g.pid}) in ${g.runtimeDir}\n`);
    }
    const legs: Leg[] = [];
    if (opts.guests === 0) {
      legs.push({ title: 'host ↔ host', serverDir: host.runtimeDir, serverDomain: 0, clientDir: host.runtimeDir, clientDomain: 0 });
    } else {
      legs.push({ title: 'host ↔ guest 1', serverDir: host.runtimeDir, serverDomain: 0, clientDir: guestDirs[0]!, clientDomain: 1 });
      if (opts.guests >= 2) {
        legs.push({ title: 'guest 2 ↔ guest 1', serverDir: guestDirs[1]!, serverDomain: 2, clientDir: guestDirs[0]!, clientDomain: 1 });
      }
    }
    for (const leg of legs) await runLeg(leg, opts, out, err, children);
  } finally {
    await cleanup();
    unregister();
    unsignal();
    out.write('cleaned up\n');
  }
}

interface DemoCliOpts {
  size?: number;
  ring: number;
  pings?: number;
  guests: number;
  vm?: boolean;
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'start a private daemon (and simulated guests, or with --vm a real QEMU guest), move data over vchans, report speed, clean up',
    )
    .addOption(
      sizeOption('-s, --size <size>', 'bytes to transfer per vchan, each way with --vm (e.g. 256M, 1.5G; default: 1G, with --vm 16M)'),
    )
    .addOption(sizeOption('--ring <size>', 'ring size per direction', 1024 ** 2))
    .option('--pings <n>', 'round trips to time (default 10000, with --vm 1000)', (v) => parseInteger(v, 'pings'))
    .option(
      '--guests <n>',
      'simulated guest domains (0: host processes only; 1: host↔guest; 2: also guest↔guest)',
      (v) => parseInteger(v, 'guests', 0, 8),
      0,
    )
    .option('--vm', 'boot a real Linux guest under QEMU (the image scripts/vm/build-image.sh builds) and run host↔guest over ivshmem')
    .addHelpText(
      'after',
      `
With --vm: needs qemu-system-x86_64 and the guest image (bash scripts/vm/build-image.sh). The guest
runs kvmchand --guest over VFIO; data moves host → guest and guest → host with the SHA-256
checked on both ends; QEMU, the daemons and every temporary directory are removed at the end,
on errors and on Ctrl-C. Under TCG (no KVM) the boot takes tens of seconds.`,
    )
    .action(async (o: DemoCliOpts) => {
      if (o.vm === true) {
        if (o.guests !== 0) throw new KvmchanError('--vm and --guests are exclusive', 'KVMCHAN_E_DEMO');
        const { runVmDemo } = await import('./demo-vm.js');
        await runVmDemo({ size: o.size ?? 16 * 1024 ** 2, ring: o.ring, pings: o.pings ?? 1000 }, process.stdout, process.stderr);
        return;
      }
      await runDemo({ size: o.size ?? 1024 ** 3, ring: o.ring, pings: o.pings ?? 10000, guests: o.guests }, process.stdout, process.stderr);
    });
}
