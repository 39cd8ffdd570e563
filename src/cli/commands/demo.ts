/**
 * `kvmchan demo`: the embedded default main job. A private kvmchand in a
 * temporary runtime dir (with `--guests N`, also N simulated guests, each with
 * its own guest daemon), a vchan between this process and a second one, a bulk
 * transfer checked by SHA-256, a 64-byte round-trip measurement, and cleanup.
 */
import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Vchan } from '../../client/index.js';
import { PrivateDaemon } from '../private-daemon.js';
import { Progress, bytes, rate } from '../format.js';
import { parseSize, parseInteger } from '../args.js';
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

async function runLeg(leg: Leg, opts: DemoOpts, out: NodeJS.WriteStream, err: NodeJS.WriteStream): Promise<void> {
  const port = 1;
  const setupStart = process.hrtime.bigint();
  const server = await Vchan.listen({ port, domain: leg.clientDomain, runtimeDir: leg.serverDir, readMin: opts.ring, writeMin: opts.ring });
  const child = spawn(process.execPath, [PEER, leg.clientDir, String(port), String(opts.size), String(opts.pings), String(leg.serverDomain)], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const peerExit = new Promise<number | null>((resolve) => child.once('exit', (code) => { resolve(code); }));
  try {
    await server.waitConnected({ timeout: 15000 });
    const setupMs = Number(process.hrtime.bigint() - setupStart) / 1e6;
    out.write(`${leg.title}: vchan up between pid ${process.pid} and pid ${child.pid ?? '?'} (rings ${bytes(server.writeSize)} each way, setup incl. process start ${setupMs.toFixed(1)} ms)\n`);

    const chunk = Buffer.allocUnsafe(64 * 1024);
    randomFillSync(chunk);
    const hash = createHash('sha256');
    const progress = new Progress(err, opts.size, 'transfer');
    const t0 = process.hrtime.bigint();
    for (let sent = 0; sent < opts.size; ) {
      const n = Math.min(chunk.length, opts.size - sent);
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
    const okHash = ack.subarray(8).equals(hash.digest());
    out.write(`  moved ${bytes(opts.size)} in ${secs.toFixed(3)} s: ${rate(opts.size, secs)} (both ends hashing); SHA-256 ${okHash ? 'matches' : 'MISMATCH'}\n`);
    if (!okHash) throw new KvmchanError('data corrupted in transit', 'KVMCHAN_E_DEMO');

    const pkt = Buffer.alloc(64);
    const samples: number[] = [];
    for (let i = 0; i < opts.pings; i++) {
      const s = process.hrtime.bigint();
      await server.send(pkt);
      if ((await server.recvInto(pkt)) < 0) throw new KvmchanError('peer closed during ping', 'KVMCHAN_E_DEMO');
      samples.push(Number(process.hrtime.bigint() - s) / 1000);
    }
    if (samples.length > 0) {
      samples.sort((a, b) => a - b);
      const p = (q: number): string => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!.toFixed(1);
      out.write(`  64-byte round trip over ${samples.length} pings: p50 ${p(0.5)} µs, p99 ${p(0.99)} µs\n`);
    }
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
  let configDir: string | undefined;
  try {
    const hostArgs: string[] = [];
    if (opts.guests > 0) {
      // Simulated guests, and a policy that lets them talk to each other (docs/security.md, "Policy").
      configDir = fs.mkdtempSync(path.join(fs.realpathSync(process.env['TMPDIR'] ?? '/tmp'), 'kvmchan-demo-'));
      const cfg = path.join(configDir, 'kvmchand.json');
      fs.writeFileSync(cfg, JSON.stringify({ policy: { guestPairs: 'all' } }));
      hostArgs.push('--simulate-guests', String(opts.guests), '--config', cfg);
    }
    const host = await PrivateDaemon.start({ extraArgs: hostArgs });
    daemons.push(host);
    out.write(`kvmchand started (pid ${host.pid}) in ${host.runtimeDir}\n`);
    const guestDirs: string[] = [];
    for (let id = 1; id <= opts.guests; id++) {
      const g = await PrivateDaemon.start({ extraArgs: ['--guest', '--device-dir', path.join(host.runtimeDir, 'domains', String(id))] });
      daemons.push(g);
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
    for (const leg of legs) await runLeg(leg, opts, out, err);
  } finally {
    for (const d of daemons.reverse()) await d.stop();
    if (configDir !== undefined) fs.rmSync(configDir, { recursive: true, force: true });
    out.write('cleaned up\n');
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('start a private daemon (and simulated guests), move data over vchans between processes, report speed, clean up')
    .option('-s, --size <bytes>', 'bytes to transfer per vchan (e.g. 256M, 1G)', parseSize, 1024 ** 3)
    .option('--ring <bytes>', 'ring size per direction', parseSize, 1024 ** 2)
    .option('--pings <n>', 'round trips to time', (v) => parseInteger(v, 'pings'), 10000)
    .option('--guests <n>', 'simulated guest domains (0: host processes only; 1: host↔guest; 2: also guest↔guest)', (v) => parseInteger(v, 'guests', 0, 8), 0)
    .action(async (opts: DemoOpts) => {
      await runDemo(opts, process.stdout, process.stderr);
    });
}
