/**
 * The service manager's fd store as kvmchand uses it (src/daemon/fd-store.ts, docs/operations.md
 * "systemd"): what a service manager passes back at start that is not kvmchand's — another
 * program's names, names of VMs nobody follows, two fds under one name — is closed and removed
 * from the store; fds passed to another pid (LISTEN_PID) are left alone; simulated guests store
 * nothing (they reconnect by themselves). Adoption itself needs a QEMU: test/e2e/kvmchand-qmp.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { native } from '../../src/native.js';
import { FakeServiceManager, fdTargets, stopDaemon } from '../helpers/fake-service-manager.js';
import { waitFor } from '../helpers/wait.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function setup(): { dir: string; runtimeDir: string; sm: FakeServiceManager } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-fdstore-'));
  dirs.push(dir);
  const runtimeDir = path.join(dir, 'run');
  fs.mkdirSync(runtimeDir);
  return { dir, runtimeDir, sm: new FakeServiceManager(dir) };
}

/** A memfd whose name shows in /proc/<pid>/fd, to tell whether a process still holds it. */
function marker(name: string): number {
  return native.memfdCreate(name, 4096, false);
}

function holds(pid: number, name: string): boolean {
  return fdTargets(pid).some((t) => t.includes(`memfd:${name}`));
}

test('fds that are not ours are closed and removed from the store; our names of unknown VMs too', async () => {
  const { runtimeDir, sm } = setup();
  try {
    const tag = `kvmchan-test-${process.pid}`;
    sm.put('some-other-program', marker(`${tag}-other`));
    sm.put('kvmchan/qmp/gone-vm/ctl/shm', marker(`${tag}-gone`));
    sm.put('kvmchan/qmp/twice/ctl/shm', marker(`${tag}-twice-a`));
    sm.put('kvmchan/qmp/twice/ctl/shm', marker(`${tag}-twice-b`));
    const child = await sm.startDaemon({ runtimeDir });
    try {
      // READY=1 may arrive after the removals: wait for both (the test fails on what is missing).
      await waitFor(() => {
        sm.drain();
        return sm.removed.length >= 3 && sm.messages.some((m) => m.includes('READY=1'));
      }, 10_000).catch(() => undefined);
      assert.deepEqual([...new Set(sm.removed)].sort(), ['kvmchan/qmp/gone-vm/ctl/shm', 'kvmchan/qmp/twice/ctl/shm', 'some-other-program']);
      for (const n of ['other', 'gone', 'twice-a', 'twice-b']) assert.ok(!holds(child.pid!, `${tag}-${n}`), `${n}: closed by the daemon`);
      assert.deepEqual(sm.names, [], 'the store is empty');
      assert.ok(
        sm.messages.some((m) => m.includes('READY=1')),
        'the daemon still became ready',
      );
    } finally {
      await stopDaemon(child);
    }
  } finally {
    sm.close();
  }
});

test('fds passed to another pid (LISTEN_PID) are neither used, closed nor removed', async () => {
  const { runtimeDir, sm } = setup();
  try {
    const tag = `kvmchan-test-pid-${process.pid}`;
    sm.put('kvmchan/qmp/vm/ctl/shm', marker(tag));
    const child = await sm.startDaemon({ runtimeDir, listenPid: 'other' });
    try {
      await waitFor(() => {
        sm.drain();
        return sm.messages.some((m) => m.includes('READY=1'));
      }, 10_000);
      assert.deepEqual(sm.removed, [], 'nothing removed');
      assert.ok(holds(child.pid!, tag), 'the fd the daemon inherited is left as it was');
      assert.deepEqual(sm.names, ['kvmchan/qmp/vm/ctl/shm']);
    } finally {
      await stopDaemon(child);
    }
  } finally {
    sm.close();
  }
});

test('simulated guests store no fds: they reconnect to a restarted daemon by themselves', async () => {
  const { runtimeDir, sm } = setup();
  try {
    const child = await sm.startDaemon({ runtimeDir, args: ['--simulate-guests', '2'] });
    try {
      await waitFor(() => {
        sm.drain();
        return sm.messages.some((m) => m.includes('READY=1'));
      }, 10_000);
      assert.deepEqual(sm.names, []);
    } finally {
      await stopDaemon(child);
    }
    sm.drain();
    assert.deepEqual(sm.names, [], 'nothing stored at stop either');
  } finally {
    sm.close();
  }
});
