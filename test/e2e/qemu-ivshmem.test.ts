// Tier 3 (docs/testing.md): real QEMU hot-plugs ivshmem-doorbell devices served by our
// IvshmemServer, and refuses a server that breaks the protocol. QEMU runs paused (-S) with
// no guest: device_add reads the server's setup synchronously, which is all we need here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IvshmemServer, type PeerInfo } from '../../src/ivshmem/server.js';
import { native } from '../../src/native.js';
import { FakeServer, msg, type Scripted } from '../ivshmem/fake-server.js';
import { QemuProcess, QmpCommandError, ensureQemu, processesMatching } from '../helpers/qemu.js';
import { waitFor, sleep } from '../helpers/wait.js';

const found = ensureQemu();
const skip = 'reason' in found ? found.reason : false;
if (skip !== false) {
  console.error(`\n#####\n# SKIPPING QEMU end-to-end tests: ${skip}\n#####\n`);
}
const qemuBinary = 'path' in found ? found.path : '';

let dir = '';
let qemu: QemuProcess | null = null;
const devices: IvshmemServer[] = [];
const memfds: number[] = [];
const MiB = 1 << 20;

function chardevArgs(id: string, socketPath: string): Record<string, unknown> {
  return { id, backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: socketPath } }, server: false } } };
}

function doorbellArgs(id: string, chardev: string, vectors: number, bus: string): Record<string, unknown> {
  return { driver: 'ivshmem-doorbell', id, chardev, vectors, bus };
}

/** The `info qtree` block of device `id` (query-pci cannot see behind root ports that firmware
 *  never numbered: with -S and no guest every secondary bus is 0). */
async function qtreeBlock(q: QemuProcess, id: string): Promise<string> {
  const tree = await q.qmp.execute<string>('human-monitor-command', { 'command-line': 'info qtree' });
  const start = tree.indexOf(`id "${id}"`);
  if (start < 0) return '';
  const next = tree.indexOf('dev: ', start);
  return tree.slice(start, next < 0 ? undefined : next);
}

async function qomGet(q: QemuProcess, path: string, property: string): Promise<unknown> {
  return q.qmp.execute('qom-get', { path, property });
}

/** eventfd-count of one of our fds, without consuming it. */
function eventfdCount(fd: number): number {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /eventfd-count:\s*([0-9a-f]+)/.exec(info);
  if (m === null) throw new Error(`fd ${fd} is not an eventfd`);
  return parseInt(m[1]!, 16);
}

before(async () => {
  if (skip !== false) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-e2e-'));
  qemu = await QemuProcess.start({ binary: qemuBinary, dir, rootPorts: 6 });
});

after(async () => {
  await qemu?.kill();
  for (const d of devices) d.close();
  for (const fd of memfds) native.close(fd);
  if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
});

test('QEMU hot-plugs two ivshmem-doorbell devices served by IvshmemServer', { skip }, async (t) => {
  const q = qemu!;
  t.diagnostic(`QEMU ${q.pid} up, QMP ready in ${q.startupMs.toFixed(0)} ms`);
  const vectors = 4;
  for (const i of [1, 2]) {
    const size = i === 1 ? MiB : 4 * MiB;
    const shm = native.memfdCreate(`kvmchan-e2e-${i}`, size, true);
    memfds.push(shm);
    const socketPath = path.join(dir, `dev${i}.sock`);
    // Identity from the fabric (architecture.md rule 4): only this QEMU may connect.
    const dev = new IvshmemServer({
      socketPath,
      shmFd: shm,
      vectors,
      authorize: ({ cred }) => cred?.pid === q.pid || `pid ${cred?.pid} is not our QEMU`,
    }).listen();
    devices.push(dev);
    const joined = new Promise<PeerInfo>((resolve) => dev.once('peer-join', resolve));

    const t0 = performance.now();
    assert.deepEqual(await q.qmp.execute('chardev-add', chardevArgs(`charshm${i}`, socketPath)), {});
    const t1 = performance.now();
    // QEMU connects inside chardev-add; we have already queued the whole setup.
    const peer = await joined;
    assert.equal(peer.id, 1, 'QEMU is peer 1 (IVPosition 1), the host is peer 0');
    assert.equal(peer.cred?.pid, q.pid);
    const t2 = performance.now();
    assert.deepEqual(await q.qmp.execute('device_add', doorbellArgs(`shm${i}`, `charshm${i}`, vectors, `rp${i}`)), {});
    const t3 = performance.now();
    t.diagnostic(`device ${i}: chardev-add ${(t1 - t0).toFixed(1)} ms, device_add ${(t3 - t2).toFixed(1)} ms`);

    // The device is realized, sits behind rp<i>, and its BAR2 is our shm.
    const dpath = `/machine/peripheral/shm${i}`;
    assert.equal(await qomGet(q, dpath, 'type'), 'ivshmem-doorbell');
    assert.equal(await qomGet(q, dpath, 'realized'), true);
    assert.equal(await qomGet(q, dpath, 'hotplugged'), true);
    assert.equal(await qomGet(q, dpath, 'vectors'), vectors);
    assert.equal(await qomGet(q, dpath, 'parent_bus'), `/machine/peripheral/rp${i}/rp${i}`);
    assert.equal(await qomGet(q, `${dpath}/ivshmem.bar2[0]`, 'size'), size);
    const block = await qtreeBlock(q, `shm${i}`);
    assert.match(block, /class RAM controller, addr 00:00\.0, pci id 1af4:1110/);
    assert.match(block, /bar 2: mem/);

    // QEMU holds and maps our memfd.
    await waitFor(() => q.fdTargets().some((f) => f.startsWith(`/memfd:kvmchan-e2e-${i}`)), 2000, 'memfd in QEMU');
    assert.ok(q.mapsMatching(`/memfd:kvmchan-e2e-${i}`).length > 0, 'memfd mapped by QEMU');

    // QEMU took id 1 as its own: it watches exactly the eventfds we sent as "1 × vectors"
    // (its interrupt sources) and consumes a kick on them; a kick on the host's own vector
    // is left alone (QEMU only ever writes those).
    const host = dev.host!;
    await waitFor(() => dev.clientCount === 1, 1000, 'client');
    for (let v = 0; v < vectors; v++) {
      const fd = host.doorbellFd(1, v)!;
      host.doorbell(1, v);
      await waitFor(() => eventfdCount(fd) === 0, 2000, `QEMU consuming its vector ${v}`);
    }
    native.eventfdWrite(host.interruptFd(0), 1);
    await sleep(50);
    assert.equal(native.eventfdRead(host.interruptFd(0)), 1, "QEMU does not read the host peer's vectors");
  }
  const tree = await q.qmp.execute<string>('human-monitor-command', { 'command-line': 'info qtree' });
  assert.equal(tree.match(/pci id 1af4:1110/g)?.length, 2);
});

test('QEMU refuses a server that breaks the protocol (device_add fails, VM lives on)', { skip }, async (t) => {
  const q = qemu!;
  const shm = native.memfdCreate('kvmchan-e2e-fake', MiB, true);
  memfds.push(shm);
  const efds: number[] = [];
  const efd = (): number => {
    const fd = native.eventfd(0, 0);
    efds.push(fd);
    return fd;
  };
  const cases: { name: string; script: () => Scripted[]; error: RegExp }[] = [
    { name: 'wrong version', script: () => [msg(1), msg(1), msg(-1, shm)], error: /server sent version 1, expecting 0/ },
    { name: 'version with an fd', script: () => [msg(0, efd()), msg(1), msg(-1, shm)], error: /invalid version message/ },
    { name: 'negative id', script: () => [msg(0), msg(-5), msg(-1, shm)], error: /invalid ID message/ },
    { name: 'id 65536', script: () => [msg(0), msg(65536), msg(-1, shm)], error: /invalid ID message/ },
    { name: 'value < -1', script: () => [msg(0), msg(1), msg(-2), msg(-1, shm)], error: /invalid message -2/ },
    { name: 'shm message without fd', script: () => [msg(0), msg(1), msg(-1)], error: /shared memory|Bad file descriptor/ },
    {
      name: 'more eventfds than vectors before the shm',
      script: () => [msg(0), msg(1), msg(0, efd()), msg(0, efd()), msg(-1, shm)],
      error: /Too many eventfd received, device has 1 vectors/,
    },
    { name: 'shm below a page', script: () => [msg(0), msg(1), msg(-1, memfdOf(2048))], error: /backing store size 0x800/ },
  ];
  const extra: number[] = [];
  function memfdOf(size: number): number {
    const fd = native.memfdCreate('kvmchan-e2e-small', size, false);
    extra.push(fd);
    return fd;
  }
  let n = 0;
  try {
    for (const c of cases) {
      n++;
      const socketPath = path.join(dir, `fake${n}.sock`);
      const server = new FakeServer(socketPath, c.script);
      try {
        await q.qmp.execute('chardev-add', chardevArgs(`charfake${n}`, socketPath));
        const t0 = performance.now();
        await assert.rejects(q.qmp.execute('device_add', doorbellArgs(`fake${n}`, `charfake${n}`, 1, 'rp5')), (err: unknown) => {
          assert.ok(err instanceof QmpCommandError, String(err));
          assert.equal(err.qmpClass, 'GenericError');
          assert.match(err.message, c.error);
          t.diagnostic(`${c.name}: refused in ${(performance.now() - t0).toFixed(1)} ms: ${err.message}`);
          return true;
        });
        // The failed device released its chardev; the root port is free for the next one.
        assert.deepEqual(await q.qmp.execute('chardev-remove', { id: `charfake${n}` }), {});
      } finally {
        server.close();
      }
    }
    // The VM survived all of it.
    assert.equal(q.exit, null);
    assert.deepEqual(await q.qmp.execute('query-status'), { status: 'prelaunch', singlestep: false, running: false });
  } finally {
    for (const fd of [...efds, ...extra]) native.close(fd);
  }
});

test("our server's vector count must not exceed the device's: QEMU only logs the extra fds", { skip }, async () => {
  const q = qemu!;
  const shm = native.memfdCreate('kvmchan-e2e-vec', MiB, true);
  memfds.push(shm);
  const socketPath = path.join(dir, 'vec.sock');
  const dev = new IvshmemServer({ socketPath, shmFd: shm, vectors: 4 }).listen();
  devices.push(dev);
  await q.qmp.execute('chardev-add', chardevArgs('charvec', socketPath));
  // Peer fds come after the shm message, i.e. after the synchronous phase: realize succeeds.
  assert.deepEqual(await q.qmp.execute('device_add', doorbellArgs('vec', 'charvec', 2, 'rp3')), {});
  await waitFor(() => q.stderr.includes('Too many eventfd received, device has 2 vectors'), 3000, 'QEMU complaint on stderr');
});

test('unplug needs a guest: device_del is accepted, DEVICE_DELETED never comes, the chardev stays busy', { skip }, async () => {
  const q = qemu!;
  assert.deepEqual(await q.qmp.execute('device_del', { id: 'shm2' }), {});
  await assert.rejects(q.qmp.waitEvent('DEVICE_DELETED', 300), /no DEVICE_DELETED/);
  await assert.rejects(q.qmp.execute('chardev-remove', { id: 'charshm2' }), /busy/);
});

test('killing QEMU: every device sees its peer leave; nothing is left behind', { skip }, async () => {
  const q = qemu!;
  const leaves = devices.map(
    (d) =>
      new Promise<[PeerInfo, string]>((resolve) =>
        d.once('peer-leave', (p, r) => {
          resolve([p, r]);
        }),
      ),
  );
  const exit = await q.kill();
  assert.equal(exit.signal, 'SIGKILL');
  for (const [peer, reason] of await Promise.all(leaves)) {
    assert.equal(peer.id, 1);
    assert.equal(reason, 'peer closed the connection');
  }
  for (const d of devices) {
    assert.equal(d.clientCount, 0);
    assert.deepEqual(
      d.peers().map((p) => p.id),
      [0],
    );
    d.close();
  }
  devices.length = 0;
  assert.deepEqual(processesMatching(dir), [], 'no QEMU left running');
  assert.deepEqual(
    fs.readdirSync(dir).filter((f) => f.endsWith('.sock')),
    [],
    'no socket files left',
  );
});

test('a non-power-of-two shm makes QEMU abort the whole VM (why the server checks it)', { skip }, async (t) => {
  const sub = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-e2e-abort-'));
  const q = await QemuProcess.start({ binary: qemuBinary, dir: sub, rootPorts: 1 });
  const odd = native.memfdCreate('kvmchan-e2e-odd', MiB + 4096, false);
  const socketPath = path.join(sub, 'odd.sock');
  // Our server refuses this configuration outright...
  assert.throws(() => new IvshmemServer({ socketPath, shmFd: odd, vectors: 1 }), /not a power of two/);
  // ...a server that does not check kills QEMU.
  const server = new FakeServer(socketPath, () => [msg(0), msg(1), msg(-1, odd)]);
  try {
    await q.qmp.execute('chardev-add', chardevArgs('charodd', socketPath));
    await assert.rejects(q.qmp.execute('device_add', doorbellArgs('odd', 'charodd', 1, 'rp1')), /QMP connection closed/);
    const exit = await q.exited;
    t.diagnostic(`QEMU exit: ${JSON.stringify(exit)}; stderr: ${q.stderr.trim().split('\n').pop() ?? ''}`);
    assert.equal(exit.signal, 'SIGABRT');
    assert.match(q.stderr, /is_power_of_2/);
  } finally {
    server.close();
    native.close(odd);
    await q.kill();
    assert.deepEqual(processesMatching(sub), []);
    fs.rmSync(sub, { recursive: true, force: true });
  }
});
