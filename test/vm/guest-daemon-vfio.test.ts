// VM tier (docs/vms.md "Running kvmchand in a guest"): the full path in a real TCG guest. A host
// kvmchand serves domain 1 (its control device and first pool, as for a simulated guest); QEMU
// plugs both into the guest at boot as ivshmem-doorbell devices; `kvmchand --guest` in the guest
// finds them over VFIO by their device headers; host↔guest vchans move data both ways, checked
// with SHA-256, with the guest as client and as server; a shared-memory region the host shares
// with the guest is mapped there from its mmap parameters (the VFIO device fd at BAR2's region
// offset plus the extent's offset, docs/shmem.md §6), bytes checked both ways.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { bootVm, vmPrerequisites, REPO_ROOT, type GuestProcess, type TestVm } from '../helpers/vm.js';
import { startDaemon, teardown, type TestDaemon } from '../helpers/daemon-fixture.js';
import { Pattern, PATTERN_PERIOD } from '../helpers/pattern.js';
import { Prng } from '../helpers/prng.js';
import { Shmem } from '../../src/client/index.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const MiB = 1 << 20;
const POOL_SIZE = 4 * MiB;
const POOL_VECTORS = 4;
const BYTES = 4 * MiB;
const PEER = path.join(REPO_ROOT, 'dist', 'test', 'helpers', 'vchan-hash-peer.js');
const SHMEM_ONCE = path.join(REPO_ROOT, 'dist', 'test', 'helpers', 'shmem-once.js');
const KVMCHAND = path.join(REPO_ROOT, 'dist', 'src', 'daemon', 'main.js');
const GUEST_RUNTIME = '/run/kvmchand-test';

let host: TestDaemon | null = null;
let vm: TestVm | null = null;
let guestDaemon: GuestProcess | null = null;

before(async () => {
  if ('reason' in pre) return;
  host = await startDaemon({ config: { simulateGuests: 1, pools: { poolSize: POOL_SIZE, poolVectors: POOL_VECTORS, lowWater: 0 } } });
  const dir = path.join(host.runtimeDir, 'domains', '1');
  vm = await bootVm({
    qemu: pre.qemu,
    image: pre.image,
    ivshmem: [
      { id: 'control', socketPath: path.join(dir, 'control.sock'), vectors: 1, rootPort: 1 },
      { id: 'pool1', socketPath: path.join(dir, 'pool-1.sock'), vectors: POOL_VECTORS, rootPort: 2 },
    ],
  });
});

after(async () => {
  await teardown(
    async () => {
      if (guestDaemon !== null) await guestDaemon.kill('SIGTERM');
    },
    async () => vm?.shutdown(),
    async () => host?.stop(),
  );
});

function expectedHash(seed: number, n: number): string {
  const h = createHash('sha256');
  const p = new Pattern(seed);
  for (let pos = 0; pos < n; pos += PATTERN_PERIOD) h.update(p.slice(pos, Math.min(PATTERN_PERIOD, n - pos)));
  return h.digest('hex');
}

interface PeerResult {
  role: string;
  bytes: number;
  sent: string;
  received: string;
  ms: number;
}

/** The host end, as a child process (a vchan client of the host daemon). */
function hostPeer(args: string[]): { ready: Promise<void>; done: Promise<PeerResult> } {
  const child = spawn(process.execPath, [PEER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (markReady = r));
  const done = new Promise<PeerResult>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('READY ')) markReady();
    });
    child.on('exit', (code) => {
      const m = /^DONE (.*)$/m.exec(out);
      if (code === 0 && m !== null) resolve(JSON.parse(m[1]!) as PeerResult);
      else reject(new Error(`host peer exited ${code}: ${out}\n${err}`));
    });
  });
  return { ready, done };
}

async function guestResult(p: GuestProcess): Promise<PeerResult> {
  const m = await p.waitForOutput(/^(DONE|FAILED) (.*)$/m, 900_000);
  if (m[1] === 'FAILED') assert.fail(`guest peer failed: ${m[2]}\n${p.stderr()}`);
  return JSON.parse(m[2]!) as PeerResult;
}

const mbps = (r: PeerResult): string =>
  `${((2 * r.bytes) / MiB / (r.ms / 1000)).toFixed(2)} MiB/s both directions together (${r.ms.toFixed(0)} ms)`;

test('kvmchand --guest finds its control device and pool over VFIO and attaches', { skip }, async (t) => {
  const v = vm!;
  const t0 = performance.now();
  guestDaemon = v.start(['node', KVMCHAND, '--guest', '--runtime-dir', GUEST_RUNTIME, '--log-level', 'info']);
  await guestDaemon.waitForOutput(/kvmchand ready/, 600_000);
  const ready =
    guestDaemon
      .stdout()
      .split('\n')
      .find((l) => l.includes('"msg":"kvmchand ready"')) ?? '';
  t.diagnostic(`guest daemon ready after ${(performance.now() - t0).toFixed(0)} ms: ${ready}`);
  assert.match(ready, /"domain":1/);
  assert.match(ready, /"devices":"vfio"/);
  await guestDaemon.waitForOutput(/"msg":"pool attached"/, 120_000);
  const attached = guestDaemon
    .stdout()
    .split('\n')
    .filter((l) => l.includes('device attached'));
  t.diagnostic(attached.join('\n'));
  assert.equal(attached.length, 2, 'control device and pool 1');
  assert.match(host!.log(), /guest control channel offered/);
});

test('host server ↔ guest client: 4 MiB each way, SHA-256 intact', { skip }, async (t) => {
  const h = hostPeer(['server', host!.runtimeDir, '1', '100', String(BYTES)]);
  await h.ready;
  const g = vm!.start(['node', PEER, 'client', GUEST_RUNTIME, '0', '100', String(BYTES)]);
  const [hr, gr] = await Promise.all([h.done, guestResult(g)]);
  assert.equal(hr.sent, expectedHash(1, BYTES));
  assert.equal(gr.sent, expectedHash(2, BYTES));
  assert.equal(gr.received, hr.sent, 'host → guest');
  assert.equal(hr.received, gr.sent, 'guest → host');
  t.diagnostic(`host side: ${mbps(hr)}; guest side: ${mbps(gr)}`);
});

test('guest server ↔ host client: 4 MiB each way, SHA-256 intact', { skip }, async (t) => {
  const g = vm!.start(['node', PEER, 'server', GUEST_RUNTIME, '0', '200', String(BYTES)]);
  await g.waitForOutput(/^READY /m, 600_000);
  const h = hostPeer(['client', host!.runtimeDir, '1', '200', String(BYTES)]);
  const [hr, gr] = await Promise.all([h.done, guestResult(g)]);
  assert.equal(gr.received, hr.sent, 'host → guest');
  assert.equal(hr.received, gr.sent, 'guest → host');
  assert.equal(hr.sent, expectedHash(2, BYTES));
  t.diagnostic(`host side: ${mbps(hr)}; guest side: ${mbps(gr)}`);
});

test('host → guest region over VFIO: the guest maps it from its mmap parameters; bytes checked both ways', { skip }, async (t) => {
  const shm = await Shmem.open({ runtimeDir: host!.runtimeDir });
  try {
    const r = await shm.share(1, 16);
    const bytes = new Prng(41).bytes(r.buffer.byteLength);
    new Uint8Array(r.buffer).set(bytes);
    const g = vm!.start(['node', SHMEM_ONCE, GUEST_RUNTIME, '0', String(r.id), '42']);
    const m = await g.waitForOutput(/^(DONE|FAILED) (.*)$/m, 900_000);
    if (m[1] === 'FAILED') assert.fail(`guest failed: ${m[2]}\n${g.stderr()}`);
    const res = JSON.parse(m[2]!) as { offset: number; length: number; found: string; wrote: string };
    t.diagnostic(`guest mmap parameters: offset ${res.offset} (VFIO region offset + extent), length ${res.length}`);
    assert.equal(res.length, 16 * 4096);
    assert.equal(res.found, createHash('sha256').update(bytes).digest('hex'), 'the guest reads what the host wrote');
    assert.equal(res.wrote, createHash('sha256').update(new Uint8Array(r.buffer)).digest('hex'), 'the host reads what the guest wrote');
    await shm.release(r.id);
    await shm.unmap(r);
  } finally {
    shm.close();
  }
});
