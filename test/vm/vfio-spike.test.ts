// VM tier (docs/vms.md "VFIO in the guest"): a guest drives an ivshmem-doorbell device served
// by our IvshmemServer through VFIO, using only the native addon: shared memory both ways,
// host → guest MSI-X on every vector, guest → host through a VFIO ioeventfd and through an
// MMIO doorbell write, a kick ping-pong, and a teardown after which the device opens again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IvshmemServer } from '../../src/ivshmem/server.js';
import type { HostDevice } from '../../src/ivshmem/host-device.js';
import { native } from '../../src/native.js';
import { bootVm, vmPrerequisites, REPO_ROOT, type GuestProcess, type TestVm } from '../helpers/vm.js';
import { EventfdWaiter, HOST_PATTERN_OFFSET, HOST_PATTERN_SEED, PATTERN_BYTES, patternByte } from './guest/spike-shared.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const MiB = 1 << 20;
const SHM_SIZE = 4 * MiB;
const VECTORS = 4;
const GUEST_SCRIPT = path.join(REPO_ROOT, 'dist', 'test', 'vm', 'guest', 'vfio-spike.js');

let dir = '';
let vm: TestVm | null = null;
let device: IvshmemServer | null = null;
let shmFd = -1;
let shm: ArrayBuffer | null = null;
const waiters: EventfdWaiter[] = [];

before(async () => {
  if ('reason' in pre) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-vfio-'));
  shmFd = native.memfdCreate('kvmchan-vm-spike', SHM_SIZE, true);
  shm = native.mmap(shmFd, SHM_SIZE, 0, true);
  const mem = new Uint8Array(shm);
  for (let i = 0; i < PATTERN_BYTES; i++) mem[HOST_PATTERN_OFFSET + i] = patternByte(HOST_PATTERN_SEED, i);
  const socketPath = path.join(dir, 'ivshmem.sock');
  device = new IvshmemServer({ socketPath, shmFd, vectors: VECTORS }).listen();
  vm = await bootVm({
    qemu: pre.qemu,
    image: pre.image,
    ivshmem: [{ id: 'shm0', socketPath, vectors: VECTORS, rootPort: 1 }],
  });
});

after(async () => {
  await vm?.shutdown();
  for (const w of waiters) w.close();
  device?.close();
  if (shm !== null) native.munmap(shm);
  if (shmFd >= 0) native.close(shmFd);
  if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
});

async function stepOf(p: GuestProcess, name: string): Promise<Record<string, unknown>> {
  const m = await p.waitForOutput(new RegExp(`^STEP (?:${name}|error) (.*)$`, 'm'), 600_000);
  const data = JSON.parse(m[1]!) as Record<string, unknown>;
  if (m[0].startsWith('STEP error')) assert.fail(`guest spike failed: ${String(data.error)}\n${String(data.stack)}\nstderr: ${p.stderr()}`);
  return data;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function runSpike(t: { diagnostic: (s: string) => void }, rounds: number, int0: EventfdWaiter, int1: EventfdWaiter): Promise<void> {
  const v = vm!;
  const host: HostDevice = device!.host!;
  const t0 = performance.now();
  const p = v.start(['node', GUEST_SCRIPT, String(rounds)]);

  const setup = await stepOf(p, 'setup');
  t.diagnostic(`guest setup ${(performance.now() - t0).toFixed(0)} ms after start: ${JSON.stringify(setup)}`);
  assert.equal(setup.ivPosition, 1, 'QEMU is peer 1');
  assert.equal(setup.msixCount, VECTORS);
  assert.deepEqual(setup.bar2, { size: SHM_SIZE, offset: '0x20000000000' });
  assert.equal(Number((setup.command as { after: string }).after) & 0x4, 0x4, 'Bus Master set');

  const pat = await stepOf(p, 'pattern');
  assert.equal(pat.hostPatternFirstBad, -1, 'the guest reads what the host wrote');
  const mem = new Uint8Array(shm!);
  for (let i = 0; i < PATTERN_BYTES; i++) {
    if (mem[i] !== patternByte(1, i)) assert.fail(`guest pattern differs at byte ${i} in the host's memfd`);
  }

  await stepOf(p, 'rang-host');
  const tKick = performance.now();
  assert.ok((await int0.next()) >= 1, 'ioeventfd kick reached the host (peer 0 vector 0)');
  assert.ok((await int1.next()) >= 1, 'MMIO doorbell reached the host (peer 0 vector 1)');
  t.diagnostic(`guest → host kicks seen ${(performance.now() - tKick).toFixed(1)} ms after the host noticed the step line`);

  await stepOf(p, 'armed');
  for (let vec = 0; vec < VECTORS; vec++) host.doorbell(1, vec);
  const vectors = await stepOf(p, 'vectors');
  assert.deepEqual(
    (vectors.counts as number[]).map((c) => c >= 1),
    [true, true, true, true],
    'MSI-X on every vector',
  );

  const rtt: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const s = performance.now();
    host.doorbell(1, 1);
    await int0.next();
    rtt.push(performance.now() - s);
  }
  await stepOf(p, 'pingpong');
  rtt.sort((a, b) => a - b);
  t.diagnostic(
    `kick round trip host → guest MSI-X → guest ioeventfd → host, ${rounds} rounds: ` +
      `min ${rtt[0]!.toFixed(2)} ms, p50 ${pct(rtt, 50).toFixed(2)} ms, p99 ${pct(rtt, 99).toFixed(2)} ms, max ${rtt[rtt.length - 1]!.toFixed(2)} ms`,
  );

  const td = await stepOf(p, 'teardown');
  assert.equal(td.mappings, 0);
  const r = await p.done;
  assert.equal(r.code, 0, r.stderr);
}

test('a guest drives ivshmem-doorbell through VFIO with the native addon', { skip }, async (t) => {
  const host = device!.host!;
  const int0 = new EventfdWaiter(host.interruptFd(0));
  const int1 = new EventfdWaiter(host.interruptFd(1));
  waiters.push(int0, int1);
  t.diagnostic(`boot → agent ready ${(vm!.bootMs / 1000).toFixed(1)} s`);
  await runSpike(t, 200, int0, int1);
  // Teardown left the device reusable: a second open sets everything up again.
  await runSpike(t, 20, int0, int1);
  // The pitfall behind the Bus Master write: without it MSI-X never arrives, and nothing says so.
  {
    const p = vm!.start(['node', GUEST_SCRIPT, '0', 'no-bus-master']);
    const setup = await stepOf(p, 'setup');
    assert.equal(Number((setup.command as { after: string }).after) & 0x4, 0, 'vfio-pci cleared Bus Master on open');
    await stepOf(p, 'rang-host');
    assert.ok((await int0.next()) >= 1, 'guest → host still works (no DMA involved)');
    await int1.next();
    await stepOf(p, 'armed');
    for (let vec = 0; vec < VECTORS; vec++) host.doorbell(1, vec);
    const vectors = await stepOf(p, 'vectors');
    t.diagnostic(`without Bus Master: MSI-X counts ${JSON.stringify(vectors.counts)} after ${String(vectors.waitedMs)} ms`);
    assert.deepEqual(vectors.counts, [0, 0, 0, 0], 'no MSI-X without Bus Master');
    await stepOf(p, 'teardown');
    assert.equal((await p.done).code, 0);
  }
  // ... and the device recovers on the next open once the bit is set again.
  await runSpike(t, 5, int0, int1);
  const dmesg = await vm!.exec('dmesg | grep -iE "vfio|dmar|ivshmem|1af4:1110" | tail -20');
  for (const line of dmesg.stdout.trimEnd().split('\n')) t.diagnostic(`guest dmesg: ${line}`);
});
