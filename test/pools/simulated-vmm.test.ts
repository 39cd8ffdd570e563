// The simulated VMM backend (src/daemon/vmm/simulated.ts): per-guest device directories
// and control devices that simulated guests attach to exactly as QEMU would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SimulatedVmm, simulatedGuests } from '../../src/daemon/vmm/simulated.js';
import type { VmmDomain } from '../../src/daemon/vmm/vmm.js';
import { PoolManager } from '../../src/daemon/pools/pool-manager.js';
import { SocketDevice } from '../../src/ivshmem/socket-device.js';
import { native } from '../../src/native.js';
import { fdCount, readable } from './fixture.js';
import { waitFor } from '../helpers/wait.js';

function tempRuntime(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-vmm-'));
}

test('each simulated guest gets a private directory and a control device with IVPosition 1', async () => {
  const fds0 = fdCount();
  const maps0 = native.mappingCount();
  const dir = tempRuntime();
  const vmm = new SimulatedVmm({ runtimeDir: dir, guests: simulatedGuests(2) });
  const joins: number[] = [];
  const leaves: number[] = [];
  vmm.on('control-join', (d) => joins.push(d));
  vmm.on('control-leave', (d) => leaves.push(d));
  const guests: SocketDevice[] = [];
  try {
    assert.equal(vmm.kind, 'simulated');
    assert.deepEqual(vmm.domains(), [
      { id: 1, name: 'sim-1' },
      { id: 2, name: 'sim-2' },
    ]);
    for (const id of [1, 2]) {
      const d = path.join(dir, 'domains', String(id));
      assert.equal(vmm.deviceDir(id), d);
      assert.equal(fs.statSync(d).mode & 0o777, 0o700);
      assert.ok(fs.lstatSync(path.join(d, 'control.sock')).isSocket());
    }
    // Anyone may pass through domains/ (an unprivileged QEMU must), nobody may list it; each
    // domain's own directory is the gate (src/daemon/vmm/domain-dir.ts).
    assert.equal(fs.statSync(path.join(dir, 'domains')).mode & 0o777, 0o711);

    const g1 = await SocketDevice.connect(path.join(vmm.deviceDir(1), 'control.sock'), { vectors: 1 });
    guests.push(g1);
    assert.equal(g1.ivPosition, 1);
    assert.equal(g1.shm.size, 256 * 1024);
    assert.deepEqual(g1.peers(), [0]);
    assert.deepEqual(joins, [1]);
    // Doorbells both ways between the host peer and the guest.
    const host = vmm.controlDevice(1).host!;
    host.doorbell(1, 0);
    assert.equal(await readable(g1.interruptFd(0)), 1);
    g1.doorbell(0, 0);
    assert.equal(await readable(host.interruptFd(0)), 1);
    // Shared memory is shared.
    new Uint8Array(host.map(0, 4096))[7] = 42;
    assert.equal(new Uint8Array(g1.map(0, 4096))[7], 42);
    // One guest per control device: a second connection is refused.
    await assert.rejects(SocketDevice.connect(path.join(vmm.deviceDir(1), 'control.sock'), { vectors: 1, timeoutMs: 500 }));
    // Guests are kept apart: guest 2's control device is another device.
    const g2 = await SocketDevice.connect(path.join(vmm.deviceDir(2), 'control.sock'), { vectors: 1 });
    guests.push(g2);
    assert.equal(g2.ivPosition, 1);
    assert.equal(new Uint8Array(g2.map(0, 4096))[7], 0);
    g1.close();
    await waitFor(() => leaves.length === 1, 2000, 'control-leave');
    assert.deepEqual(leaves, [1]);
    // It can come back (a restarted guest daemon).
    guests.push(await SocketDevice.connect(path.join(vmm.deviceDir(1), 'control.sock'), { vectors: 1 }));
    assert.deepEqual(joins, [1, 2, 1]);
  } finally {
    for (const g of guests) g.close();
    vmm.close();
  }
  assert.ok(!fs.existsSync(path.join(dir, 'domains', '1')), 'domain dirs removed on close');
  assert.ok(!fs.existsSync(path.join(dir, 'domains', '2')));
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing left in the runtime dir');
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(native.mappingCount(), maps0);
  assert.equal(fdCount(), fds0);
});

test('guests can appear and vanish; the pool manager follows', async () => {
  const fds0 = fdCount();
  const dir = tempRuntime();
  const vmm = new SimulatedVmm({ runtimeDir: dir, guests: [] });
  const pm = new PoolManager({ runtimeDir: dir, config: { poolSize: 1 << 20, poolVectors: 4 } });
  const added: VmmDomain[] = [];
  const removed: VmmDomain[] = [];
  vmm.on('domain-added', (d) => {
    added.push(d);
    pm.addDomain(d.id);
  });
  vmm.on('domain-removed', (d) => {
    removed.push(d);
    pm.removeDomain(d.id);
  });
  const guests: SocketDevice[] = [];
  try {
    assert.deepEqual(vmm.domains(), []);
    vmm.addDomain({ id: 7, name: 'web' });
    assert.deepEqual(added, [{ id: 7, name: 'web' }]);
    assert.throws(() => {
      vmm.addDomain({ id: 7, name: 'other' });
    }, /duplicate/);
    assert.throws(() => {
      vmm.addDomain({ id: 8, name: 'web' });
    }, /duplicate/);
    assert.throws(() => {
      vmm.addDomain({ id: 0, name: 'host' });
    }, /id/);
    const d7 = vmm.deviceDir(7);
    assert.deepEqual(fs.readdirSync(d7).sort(), ['control.sock', 'pool-1.sock']);
    // A simulated guest daemon attaches to both, as it would with --device-dir.
    const control = await SocketDevice.connect(path.join(d7, 'control.sock'), { vectors: 1 });
    guests.push(control);
    const pool = await SocketDevice.connect(path.join(d7, pm.poolsOf(7)[0]!.socket), { vectors: 4 });
    guests.push(pool);
    assert.equal(pm.pools()[0]!.state, 'ready');
    // The VM stops: its devices go, the guest sees its connections end, the directory goes.
    assert.equal(vmm.removeDomain(7), true);
    assert.equal(vmm.removeDomain(7), false);
    assert.deepEqual(removed, [{ id: 7, name: 'web' }]);
    await waitFor(() => control.closed && pool.closed, 2000, 'the guest to be disconnected');
    assert.ok(!fs.existsSync(d7));
    assert.equal(pm.poolCount, 0);
    assert.throws(() => vmm.controlDevice(7), /no simulated domain/);
  } finally {
    for (const g of guests) g.close();
    pm.close();
    vmm.close();
  }
  assert.deepEqual(fs.readdirSync(dir), [], 'pool manager and VMM leave nothing behind');
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(fdCount(), fds0);
});

test('a bad guest list creates nothing', () => {
  const dir = tempRuntime();
  const fds0 = fdCount();
  try {
    assert.throws(
      () =>
        new SimulatedVmm({
          runtimeDir: dir,
          guests: [
            { id: 1, name: 'a' },
            { id: 1, name: 'b' },
          ],
        }),
      /duplicate/,
    );
    assert.equal(fdCount(), fds0);
    assert.ok(!fs.existsSync(path.join(dir, 'domains')), 'nothing left behind');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
