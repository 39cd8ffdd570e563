// VM tier (docs/vms.md "Running kvmchand in a guest"): VfioDevice in a real TCG guest with an
// intel-iommu, against a device served by our IvshmemServer: BAR2 mapped whole and by
// sub-range, host → guest MSI-X on every vector, guest → host through a VFIO ioeventfd and an
// MMIO store, kick round trips both ways, a clean close after which the device opens again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IvshmemServer } from '../../src/ivshmem/server.js';
import { native } from '../../src/native.js';
import { EventFdWaiter } from '../../src/ring/eventfd-waiter.js';
import { bootVm, vmPrerequisites, REPO_ROOT, type GuestProcess, type TestVm } from '../helpers/vm.js';
import { Pattern } from '../helpers/pattern.js';
import { HOST_SEED, GUEST_SEED, GUEST_PATTERN_OFFSET } from '../helpers/vfio-guest.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const SHM_SIZE = 4 << 20;
const VECTORS = 4;
const ROUNDS = 200;
const GUEST_SCRIPT = path.join(REPO_ROOT, 'dist', 'test', 'helpers', 'vfio-guest.js');

let dir = '';
let vm: TestVm | null = null;
let server: IvshmemServer | null = null;
let shm: ArrayBuffer | null = null;

before(async () => {
  if ('reason' in pre) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-vfio-'));
  const fd = native.memfdCreate('kvmchan-vfio-test', SHM_SIZE, true);
  try {
    server = new IvshmemServer({ socketPath: path.join(dir, 'dev.sock'), shmFd: fd, vectors: VECTORS }).listen();
  } finally {
    native.close(fd);
  }
  shm = server.host!.map();
  new Uint8Array(shm).set(new Pattern(HOST_SEED).slice(0, 4096), 0);
  vm = await bootVm({
    qemu: pre.qemu,
    image: pre.image,
    ivshmem: [{ id: 'shm0', socketPath: server.socketPath, vectors: VECTORS, rootPort: 1 }],
  });
});

after(async () => {
  await vm?.shutdown();
  server?.close();
  if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
});

async function stepOf(p: GuestProcess, name: string): Promise<Record<string, unknown>> {
  const m = await p.waitForOutput(new RegExp(`^STEP (?:${name}|error) (.*)$`, 'm'), 600_000);
  const data = JSON.parse(m[1]!) as Record<string, unknown>;
  if (m[0].startsWith('STEP error')) assert.fail(`guest failed: ${String(data.error)}\n${String(data.stack)}\nstderr: ${p.stderr()}`);
  return data;
}

const pct = (s: number[], p: number): number => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
const fmt = (s: number[]): string =>
  `min ${s[0]!.toFixed(3)} ms, p50 ${pct(s, 50).toFixed(3)} ms, p99 ${pct(s, 99).toFixed(3)} ms, max ${s[s.length - 1]!.toFixed(3)} ms`;

test('VfioDevice in a real guest: maps BAR2, sees host kicks on every vector, rings the host', { skip }, async (t) => {
  const host = server!.host!;
  const kick = native.dup(host.doorbellFd(1, 0) ?? -1);
  const w = Array.from({ length: VECTORS }, (_, v) => new EventFdWaiter(native.dup(host.interruptFd(v)), native.dup(kick)));
  t.after(() => {
    for (const x of w) x.close();
    native.close(kick);
  });
  const got0 = w[0]!.wait(AbortSignal.timeout(600_000));
  const got1 = w[1]!.wait(AbortSignal.timeout(600_000));
  const p = vm!.start(['node', GUEST_SCRIPT, String(ROUNDS)]);

  const found = await stepOf(p, 'found');
  t.diagnostic(`guest sees ${JSON.stringify(found.devices)}`);
  const opened = await stepOf(p, 'opened');
  t.diagnostic(`opened ${JSON.stringify(opened)}`);
  assert.equal(opened.ivPosition, 1);
  assert.equal(opened.vectors, VECTORS);
  assert.equal(opened.size, SHM_SIZE);
  assert.equal(opened.mode, 'iommu');

  const mapped = await stepOf(p, 'mapped');
  assert.equal(mapped.hostFirstBad, -1, 'the guest reads what the host wrote');
  assert.equal(mapped.seenThroughWhole, -1, 'a sub-range mapping aliases the whole mapping');
  assert.equal(
    new Pattern(GUEST_SEED).mismatch(0, new Uint8Array(shm!, GUEST_PATTERN_OFFSET, 4096)),
    -1,
    'the host reads what the guest wrote',
  );

  const rang = await stepOf(p, 'rang');
  await got0;
  await got1;
  t.diagnostic(`guest → host: ioeventfd (vector 0) and MMIO store (vector 1) arrived; ${JSON.stringify(rang.stats)}`);
  assert.deepEqual(rang.stats, { ioeventfds: 1, relayed: 0 });

  for (let v = 0; v < VECTORS; v++) host.doorbell(1, v);
  const vectors = await stepOf(p, 'vectors');
  assert.deepEqual(vectors.counts, [1, 1, 1, 1], 'MSI-X on every vector');

  // Guest-driven round trips come next, and the guest starts them as soon as it has reported the
  // host-driven ones, long before that report reaches us: the echo must be waiting on vector 2
  // from now on, or its first kick finds no waiter and is consumed unseen.
  // Echo until the guest says it is done: a busy host can see two of the guest's kicks as one
  // wake-up (an eventfd counts them), so the number of wake-ups is not the number of rounds.
  let echoed = 0;
  const done = new AbortController();
  const echo = async (): Promise<void> => {
    while (!done.signal.aborted) {
      try {
        await w[2]!.wait(done.signal); // the guest times its own rounds out
      } catch (err) {
        if (done.signal.aborted) return;
        throw err;
      }
      echoed++;
      host.doorbell(1, 2);
    }
  };
  const echoing = echo();
  echoing.catch(() => undefined); // awaited below; a failure must not surface as unhandled first
  // Host-driven round trips: host rings guest vector 1, guest answers through its ioeventfd.
  const rtt: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const back = w[0]!.wait(AbortSignal.timeout(60_000));
    const s = performance.now();
    host.doorbell(1, 1);
    await back;
    rtt.push(performance.now() - s);
  }
  await stepOf(p, 'host-pingpong');
  rtt.sort((a, b) => a - b);
  t.diagnostic(`kick round trip host → guest (MSI-X) → host (ioeventfd), ${ROUNDS} rounds: ${fmt(rtt)}`);

  // Guest-driven: echo vector 2 back to the guest's vector 2.
  const g = await stepOf(p, 'guest-pingpong');
  done.abort();
  await echoing;
  assert.ok(echoed > 0, 'the host echoed the guest');
  t.diagnostic(`kick round trip guest → host (ioeventfd) → guest (MSI-X), measured in the guest, ${ROUNDS} rounds: ${JSON.stringify(g)}`);

  const closed = await stepOf(p, 'closed');
  assert.equal(closed.mappings, 0);
  const again = await stepOf(p, 'reopened');
  assert.equal(again.guestPatternFirstBad, -1);
  assert.equal(again.mappings, 0);
  const r = await p.done;
  assert.equal(r.code, 0, r.stderr);
  const dmesg = await vm!.exec('dmesg | grep -iE "vfio|dmar|1af4" | tail -15');
  t.diagnostic(`guest dmesg:\n${dmesg.stdout}`);
});
