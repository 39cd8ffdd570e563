/**
 * The benchmark's real-guest phase (docs/testing.md, "Benchmarks and targets"): one Linux guest
 * under QEMU (the image scripts/vm/build-image.sh builds, docs/vms.md §3), served by a host
 * kvmchand with its control device and pool plugged at boot, running `kvmchand --guest` over
 * VFIO. Against TCP over virtio-net between the same host and guest in the same run (QEMU
 * user-mode networking, `hostfwd` on 127.0.0.1 only), it measures host → guest throughput,
 * 64-byte round trips and channel setup latency. Every figure is a ratio to its baseline;
 * nothing is asserted (under TCG the guest CPU is emulated, so absolute numbers say little).
 *
 * Runs with `--vm`, or when QEMU and the image are both present; otherwise it is skipped with
 * the reason printed. The guest peer is bench/peer.ts, run inside the guest.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Vchan } from '../src/client/index.js';
import type { PrivateDaemon } from '../src/cli/private-daemon.js';
import { findQemu, vmImage } from '../src/vm/guest-image.js';
import { bootVm, type GuestProcess, type TestVm } from '../test/helpers/vm.js';
import { vchanChan, netChan, writeBulk, readExact, writeExact, type Chan } from './channels.js';
import type { Watchdog } from './watchdog.js';

const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));
const KVMCHAND = fileURLToPath(new URL('../src/daemon/main.js', import.meta.url));
const GUEST_RUNTIME = '/run/kvmchand-bench';
const MiB = 1024 * 1024;
const RING = MiB;

export interface VmPhaseEnv {
  dog: Watchdog;
  smoke: boolean;
  quick: boolean;
  forced: boolean;
  startDaemon: (args: string[]) => Promise<PrivateDaemon>;
  stopDaemon: (d: PrivateDaemon) => Promise<void>;
}

/** Why the phase cannot run, or null. */
export function vmSkipReason(forced: boolean): string | null {
  const q = findQemu();
  if ('reason' in q) return q.reason;
  const img = vmImage();
  if ('reason' in img) return img.reason;
  return forced || process.platform === 'linux' ? null : 'not Linux';
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pct(samples: number[], q: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  s.close();
  return port;
}

/** Wait for `re` in a guest process's stdout, keeping the watchdog fed while the VM is alive (own deadline). */
async function guestOutput(dog: Watchdog, p: GuestProcess, re: RegExp, what: string, timeoutMs = 600_000): Promise<void> {
  dog.waiting(what);
  const deadline = Date.now() + timeoutMs;
  let finished = false;
  void p.done.then(
    () => (finished = true),
    () => (finished = true),
  );
  while (!re.test(p.stdout())) {
    if (finished) throw new Error(`guest: ${what}: the process ended\n${p.stdout()}\n${p.stderr()}`);
    if (Date.now() > deadline) throw new Error(`guest: ${what}: not within ${timeoutMs / 1000} s\n${p.stdout()}\n${p.stderr()}`);
    dog.progress();
    await sleep(100);
  }
}

/** Connect to the guest's TCP server through the hostfwd, retrying until it answers with a byte. */
async function tcpConnect(
  dog: Watchdog,
  port: number,
  guestDone: Promise<unknown>,
  timeoutMs = 300_000,
): Promise<{ sock: net.Socket; ch: Chan }> {
  const deadline = Date.now() + timeoutMs;
  let ended = false;
  void guestDone.then(
    () => (ended = true),
    () => (ended = true),
  );
  for (;;) {
    if (ended) throw new Error('the guest TCP peer exited before accepting');
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    const ch = netChan(sock);
    const b = new Uint8Array(1);
    try {
      await Promise.race([
        readExact(ch, b),
        sleep(3000).then(() => {
          throw new Error('no byte');
        }),
      ]);
      return { sock, ch };
    } catch {
      sock.destroy();
    }
    if (Date.now() > deadline) throw new Error(`no TCP connection to the guest within ${timeoutMs / 1000} s`);
    dog.progress();
    await sleep(200);
  }
}

interface Measured {
  bps: number;
  rtt: number[];
}

/** The host side of one transfer + ping run, once `ch` is up and the peer's ready byte arrived. */
async function exercise(ch: Chan, total: number, pings: number): Promise<Measured> {
  const ack = new Uint8Array(1);
  const t0 = process.hrtime.bigint();
  await writeBulk(ch, total, 65536);
  await readExact(ch, ack);
  const bps = total / (Number(process.hrtime.bigint() - t0) / 1e9);
  const msg = new Uint8Array(64);
  const rtt: number[] = [];
  for (let i = 0; i < pings; i++) {
    const s = process.hrtime.bigint();
    await writeExact(ch, msg);
    await readExact(ch, msg);
    rtt.push(Number(process.hrtime.bigint() - s) / 1000);
  }
  return { bps, rtt };
}

/** Rows for the table, or a skip message. */
export async function vmPhase(env: VmPhaseEnv): Promise<string[][]> {
  const { dog } = env;
  const total = env.smoke ? MiB : env.quick ? 8 * MiB : 32 * MiB;
  const pings = env.smoke ? 50 : env.quick ? 300 : 1000;
  const setups = env.smoke ? 3 : env.quick ? 20 : 50;
  const work = dog.path(fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-bench-vm-')));
  const cfg = path.join(work, 'kvmchand.json');
  fs.writeFileSync(cfg, JSON.stringify({ simulateGuests: 1, pools: { poolSize: 8 * MiB, poolVectors: 8, lowWater: 0 } }));
  const host = await env.startDaemon(['--config', cfg]);
  let vm: TestVm | null = null;
  let guestDaemon: GuestProcess | null = null;
  try {
    const tcpPort = await freePort();
    const dom = path.join(host.runtimeDir, 'domains', '1');
    dog.waiting('the guest to boot (QEMU TCG)');
    vm = await bootVm({
      ivshmem: [
        { id: 'control', socketPath: path.join(dom, 'control.sock'), vectors: 1, rootPort: 1 },
        { id: 'pool1', socketPath: path.join(dom, 'pool-1.sock'), vectors: 8, rootPort: 2 },
      ],
      extraArgs: ['-netdev', `user,id=n0,restrict=off,hostfwd=tcp:127.0.0.1:${tcpPort}-:${tcpPort}`, '-device', 'virtio-net-pci,netdev=n0'],
      onConsoleLine: () => {
        dog.progress();
      },
    });
    dog.child(vm.child);
    dog.path(vm.dir);
    if (!vm.console().includes('eth0 10.0.2.15'))
      throw new Error('the guest has no network (rebuild the image: bash scripts/vm/build-image.sh)');
    guestDaemon = vm.start(['node', KVMCHAND, '--guest', '--runtime-dir', GUEST_RUNTIME, '--log-level', 'info']);
    await guestOutput(dog, guestDaemon, /"msg":"pool attached"/, "the guest's kvmchand to attach its pool");

    // vchan: host listens, the guest peer connects.
    const script = JSON.stringify([{ sink: total }, { echo: pings, size: 64 }]);
    const port = 700;
    const v = await Vchan.listen({ runtimeDir: host.runtimeDir, port, domain: 1, readMin: RING, writeMin: RING, spin: 0 });
    const vp = vm.start(['node', PEER, 'vchan', script, GUEST_RUNTIME, String(port)], { env: { BENCH_SPIN: '0' } });
    dog.waiting('the guest vchan peer to connect');
    let vch: Chan;
    try {
      await Promise.race([
        v.waitConnected({ timeout: 300_000 }),
        vp.done.then((r) => {
          throw new Error(`guest vchan peer exited ${r.code}: ${r.stderr}`);
        }),
      ]);
      vch = dog.watch(vchanChan(v), 'vchan host↔guest');
      await readExact(vch, new Uint8Array(1));
    } catch (e) {
      v.close();
      throw e;
    }
    const vres = await exercise(vch, total, pings);
    vch.close();
    dog.waiting('the guest vchan peer to exit');
    const vr = await vp.done;
    if (vr.code !== 0) throw new Error(`guest vchan peer exited ${vr.code}: ${vr.stderr}`);

    // TCP over virtio-net: the guest listens, the host connects through the hostfwd.
    const tp = vm.start(['node', PEER, 'tcp-listen', script, String(tcpPort)]);
    dog.waiting('a TCP connection to the guest');
    const { ch: tch0 } = await tcpConnect(dog, tcpPort, tp.done);
    const tch = dog.watch(tch0, 'tcp host↔guest');
    const tres = await exercise(tch, total, pings);
    tch.close();
    dog.waiting('the guest TCP peer to exit');
    const tr = await tp.done;
    if (tr.code !== 0) throw new Error(`guest TCP peer exited ${tr.code}: ${tr.stderr}`);

    // Setup: vchan listen → connected with the guest client already waiting; TCP connect → first byte.
    const base = 5000;
    const sp = vm.start(['node', PEER, 'vchan', JSON.stringify([{ accept: setups + 1, base }]), GUEST_RUNTIME, '0']);
    const vsetup: number[] = [];
    for (let i = 0; i <= setups; i++) {
      if (i === 0) await sleep(env.smoke ? 2000 : 5000); // node start-up in the guest: not timed
      dog.waiting(`vchan setup to the guest on port ${base + i}`);
      const t0 = process.hrtime.bigint();
      const s = await Vchan.listen({ runtimeDir: host.runtimeDir, port: base + i, domain: 1 });
      try {
        await s.waitConnected({ timeout: 300_000 });
      } finally {
        s.close();
      }
      if (i > 0) vsetup.push(Number(process.hrtime.bigint() - t0) / 1e6);
      dog.progress();
    }
    dog.waiting('the guest setup peer to exit');
    if ((await sp.done).code !== 0) throw new Error('guest setup peer failed');

    const ap = vm.start(['node', PEER, 'tcp-listen', JSON.stringify([{ accept: setups, base: 0 }]), String(tcpPort)]);
    const warm = await tcpConnect(dog, tcpPort, ap.done);
    warm.sock.destroy();
    const tsetup: number[] = [];
    for (let i = 0; i < setups; i++) {
      dog.waiting(`TCP setup to the guest (${i})`);
      const t0 = process.hrtime.bigint();
      const sock = net.connect(tcpPort, '127.0.0.1');
      await once(sock, 'data');
      tsetup.push(Number(process.hrtime.bigint() - t0) / 1e6);
      sock.destroy();
      dog.progress();
    }
    if ((await ap.done).code !== 0) throw new Error('guest TCP accept peer failed');

    const mibs = (b: number): string => `${(b / MiB).toFixed(1)} MiB/s`;
    const r = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;
    const us = (x: number): string => `${x.toFixed(0)} µs`;
    const ms = (x: number): string => `${x.toFixed(1)} ms`;
    return [
      [
        `VM: host→guest 64 KiB writes (${total / MiB} MiB): vchan`,
        mibs(vres.bps),
        `TCP virtio-net ${mibs(tres.bps)}`,
        r(vres.bps, tres.bps),
      ],
      [
        `VM: 64 B RTT p50 host↔guest (${pings}): vchan`,
        us(pct(vres.rtt, 0.5)),
        `TCP ${us(pct(tres.rtt, 0.5))}`,
        r(pct(tres.rtt, 0.5), pct(vres.rtt, 0.5)),
      ],
      [
        `VM: 64 B RTT p99 host↔guest: vchan`,
        us(pct(vres.rtt, 0.99)),
        `TCP ${us(pct(tres.rtt, 0.99))}`,
        r(pct(tres.rtt, 0.99), pct(vres.rtt, 0.99)),
      ],
      [
        `VM: setup p50 host→guest (${setups}): vchan`,
        ms(pct(vsetup, 0.5)),
        `TCP connect ${ms(pct(tsetup, 0.5))}`,
        r(pct(tsetup, 0.5), pct(vsetup, 0.5)),
      ],
      [
        `VM: setup p99 host→guest: vchan`,
        ms(pct(vsetup, 0.99)),
        `TCP connect ${ms(pct(tsetup, 0.99))}`,
        r(pct(tsetup, 0.99), pct(vsetup, 0.99)),
      ],
    ];
  } finally {
    if (guestDaemon !== null && vm !== null) await guestDaemon.kill('SIGTERM').catch(() => undefined);
    if (vm !== null) {
      await vm.shutdown();
      dog.forgetPath(vm.dir);
    }
    await env.stopDaemon(host);
    fs.rmSync(work, { recursive: true, force: true });
    dog.forgetPath(work);
  }
}
