/**
 * A service manager that stops reading its notification socket (docs/operations.md, "systemd";
 * src/daemon/notify-queue.ts): the socket's queue is full (max_dgram_qlen datagrams the fake
 * manager never reads), so every send finds no room. Nothing waits for it — not the fd store,
 * not READY=1 or STOPPING=1, not the daemon serving vchans — and once the manager reads again
 * every notification arrives, in the order it was made, exactly once; no fd is left behind.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { pino, type Logger } from 'pino';
import { native } from '../../src/native.js';
import { FdStore } from '../../src/daemon/fd-store.js';
import { sdNotify } from '../../src/daemon/sd-notify.js';
import { Vchan } from '../../src/client/index.js';
import { FakeServiceManager, fdTargets, stopDaemon } from '../helpers/fake-service-manager.js';
import { expectFdsBackTo, fdCount, settledFds } from '../helpers/daemon-fixture.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { waitFor, within } from '../helpers/wait.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function setup(): { dir: string; sm: FakeServiceManager } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-notify-'));
  dirs.push(dir);
  return { dir, sm: new FakeServiceManager(dir) };
}

/** A logger whose lines the test can read. */
function capture(): { log: Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as { level: number; msg: string }) });
  return { log, lines };
}

/** A memfd whose name shows in /proc/<pid>/fd, so the test can tell which fd arrived where. */
function marker(name: string): number {
  return native.memfdCreate(name, 4096, false);
}

/** The memfd name an fd of ours refers to. */
function markerOf(fd: number): string {
  return fs
    .readlinkSync(`/proc/self/fd/${fd}`)
    .replace(/^\/memfd:/, '')
    .replace(/ \(deleted\)$/, '');
}

test('stores and removals wait in order while the manager is not reading; each fd arrives once', async () => {
  const baseline = await settledFds('self');
  const { sm } = setup();
  const { log, lines } = capture();
  const tag = `kvmchan-nq-${process.pid}`;
  const store = new FdStore({ notifySocket: sm.socketPath, log });
  try {
    // Stored while the manager still reads: sent at once.
    let fd = marker(`${tag}-early`);
    store.store('kvmchan/t/early', fd);
    native.close(fd);
    await waitFor(() => sm.names.includes('kvmchan/t/early'), 5000, 'the early store');

    const filled = sm.pause({ fill: true });
    assert.ok(filled > 0, 'the fill took some datagrams');
    // Each call returns at once. The caller closes its fd right away: the queue keeps its own.
    for (let i = 0; i < 40; i++) {
      fd = marker(`${tag}-n${i}`);
      store.store(`kvmchan/t/n${i}`, fd);
      native.close(fd);
    }
    store.remove('kvmchan/t/n5'); // still queued: cancelled, the manager never hears of it
    store.remove('kvmchan/t/n6');
    fd = marker(`${tag}-n5-again`);
    store.store('kvmchan/t/n5', fd); // queued again, now behind n39
    native.close(fd);
    store.remove('kvmchan/t/early'); // already with the manager: FDSTOREREMOVE queued…
    fd = marker(`${tag}-early-again`);
    store.store('kvmchan/t/early', fd); // …and this store after it, not before
    native.close(fd);

    assert.equal(store.pending, 40 - 2 + 1 + 1 + 1, 'stores and the removal are queued');
    assert.deepEqual(sm.removed, [], 'nothing read while paused');
    assert.ok(
      lines.some((l) => l.msg.includes('not reading its notification socket')),
      'the backlog is logged',
    );

    sm.resume();
    await waitFor(() => store.pending === 0, 20_000, 'the queue to drain');
    sm.drain();
    const expected = [
      ...Array.from({ length: 40 }, (_, i) => i)
        .filter((i) => i !== 5 && i !== 6)
        .map((i) => `kvmchan/t/n${i}`),
      'kvmchan/t/n5',
      'kvmchan/t/early',
    ];
    assert.deepEqual(
      sm.store.map((s) => s.name),
      expected,
      'every fd in the order stored, none twice',
    );
    assert.deepEqual(sm.removed, ['kvmchan/t/early'], 'only the removal of what the manager had');
    const aboutEarly = sm.notifications.filter((m) => m.includes('FDNAME=kvmchan/t/early\n')).map((m) => m.split('\n')[0]);
    assert.deepEqual(aboutEarly, ['FDSTORE=1', 'FDSTOREREMOVE=1', 'FDSTORE=1'], 'the removal reached the manager before the new store');
    for (const s of sm.store) {
      const want =
        s.name === 'kvmchan/t/n5' ? `${tag}-n5-again` : s.name === 'kvmchan/t/early' ? `${tag}-early-again` : `${tag}-${s.name.slice(10)}`;
      assert.equal(markerOf(s.fd), want, `${s.name}: the fd stored under it`);
    }
    assert.deepEqual(store.stored, [...expected].sort());
    assert.ok(
      lines.some((l) => l.msg.includes('reads its notification socket again')),
      'the end of the backlog is logged',
    );
  } finally {
    store.close();
    sm.close();
  }
  await expectFdsBackTo('self', baseline, 5000, 'every queued duplicate closed');
});

test('seeded store/remove sequences: the manager ends up holding exactly what the store says', async () => {
  const seed = seedFromEnv(0x5d_f0_57);
  const rng = new Prng(seed);
  const baseline = await settledFds('self');
  for (let round = 0; round < 8; round++) {
    const { sm } = setup();
    const store = new FdStore({ notifySocket: sm.socketPath });
    /** Name → the marker of its last store(), for names the store holds. */
    const model = new Map<string, string>();
    try {
      for (let i = 0; i < 60; i++) {
        if (i === 10) sm.pause({ fill: true });
        if (i === 45 && rng.chance(0.5)) sm.resume();
        const name = `kvmchan/r/n${rng.below(12)}`;
        if (rng.chance(0.6)) {
          const m = `kvmchan-nqr-${process.pid}-${round}-${i}`;
          const fd = marker(m);
          if (!model.has(name)) model.set(name, m);
          store.store(name, fd);
          native.close(fd);
        } else {
          model.delete(name);
          store.remove(name);
        }
      }
      sm.resume();
      await waitFor(() => store.pending === 0, 20_000, `round ${round} (seed ${seed}): the queue to drain`);
      sm.drain();
      const held = new Map(sm.store.map((s) => [s.name, markerOf(s.fd)]));
      assert.equal(held.size, sm.store.length, `round ${round} (seed ${seed}): no name twice`);
      assert.deepEqual(new Map([...held].sort()), new Map([...model].sort()), `round ${round} (seed ${seed}): the manager holds the model`);
      assert.deepEqual(store.stored, [...model.keys()].sort());
    } finally {
      store.close();
      sm.close();
    }
  }
  await expectFdsBackTo('self', baseline, 5000, 'every queued duplicate closed');
});

test('the queue is bounded: beyond it notifications are dropped with one warning', async () => {
  const baseline = await settledFds('self');
  const { sm } = setup();
  const { log, lines } = capture();
  const store = new FdStore({ notifySocket: sm.socketPath, log, maxQueued: 4 });
  try {
    const open = fdCount('self');
    sm.pause({ fill: true });
    for (let i = 0; i < 10; i++) {
      const fd = marker(`kvmchan-nqb-${process.pid}-${i}`);
      store.store(`kvmchan/b/n${i}`, fd);
      native.close(fd);
    }
    assert.equal(store.pending, 4);
    assert.equal(fdCount('self'), open + 4, 'only the queued duplicates are held');
    assert.deepEqual(store.stored, ['kvmchan/b/n0', 'kvmchan/b/n1', 'kvmchan/b/n2', 'kvmchan/b/n3'], 'a dropped store is not stored');
    assert.equal(lines.filter((l) => l.msg.includes('notification queue full')).length, 1, 'one warning for six drops');
    sm.resume();
    await waitFor(() => store.pending === 0, 20_000, 'the queue to drain');
    sm.drain();
    assert.deepEqual(sm.names, ['kvmchan/b/n0', 'kvmchan/b/n1', 'kvmchan/b/n2', 'kvmchan/b/n3']);
  } finally {
    store.close();
    sm.close();
  }
  await expectFdsBackTo('self', baseline, 5000, 'no fd left');
});

test('a device that comes and goes while the manager is not reading leaves nothing behind', async () => {
  const baseline = await settledFds('self');
  const { sm } = setup();
  const store = new FdStore({ notifySocket: sm.socketPath, maxQueued: 16 });
  try {
    sm.pause({ fill: true });
    const fd = marker(`kvmchan-nqx-${process.pid}`);
    // Far more cycles than the queue holds: cancelled stores take no place in it.
    for (let i = 0; i < 20_000; i++) {
      store.store('kvmchan/x/shm', fd);
      store.remove('kvmchan/x/shm');
    }
    store.store('kvmchan/x/last', fd);
    native.close(fd);
    assert.equal(store.pending, 1, 'only the last store waits');
    sm.resume();
    await waitFor(() => store.pending === 0, 20_000, 'the queue to drain');
    sm.drain();
    assert.deepEqual(sm.notifications, ['FDSTORE=1\nFDNAME=kvmchan/x/last\n'], 'the manager hears of none of the cycles');
  } finally {
    store.close();
    sm.close();
  }
  await expectFdsBackTo('self', baseline, 5000, 'no fd left');
});

test('closing the store closes what is still queued; none of it arrives later', async () => {
  const baseline = await settledFds('self');
  const { sm } = setup();
  const { log, lines } = capture();
  const store = new FdStore({ notifySocket: sm.socketPath, log });
  try {
    const open = fdCount('self');
    sm.pause({ fill: true });
    for (let i = 0; i < 5; i++) {
      const fd = marker(`kvmchan-nqc-${process.pid}-${i}`);
      store.store(`kvmchan/c/n${i}`, fd);
      native.close(fd);
    }
    assert.equal(fdCount('self'), open + 5);
    store.close();
    assert.equal(store.pending, 0);
    assert.equal(fdCount('self'), open, 'the queued duplicates are closed at once');
    assert.deepEqual(store.stored, [], 'what never reached the manager is not stored');
    assert.ok(lines.some((l) => l.msg.includes('never read were dropped') && l['lost'] === 5));
    sm.resume();
    assert.deepEqual(sm.names, [], 'nothing arrives after close');
  } finally {
    sm.close();
  }
  await expectFdsBackTo('self', baseline, 5000, 'no fd left');
});

test('a manager that is gone (ECONNREFUSED) is logged once and never thrown to the caller', async () => {
  const { dir } = setup();
  const { log, lines } = capture();
  const gone = path.join(dir, 'gone.sock');
  native.close(native.listenUnix(gone, 'dgram', 0, 0o600)); // the path stays, nobody reads it
  const baseline = await settledFds('self');
  const store = new FdStore({ notifySocket: gone, log });
  for (let i = 0; i < 5; i++) {
    const fd = marker(`kvmchan-nqg-${process.pid}-${i}`);
    store.store(`kvmchan/g/n${i}`, fd);
    native.close(fd);
    store.remove(`kvmchan/g/other${i}`);
  }
  assert.deepEqual(store.stored, []);
  assert.equal(store.pending, 0, 'nothing queued for a manager that is gone');
  const failures = lines.filter((l) => l.msg.includes('cannot notify the service manager'));
  assert.equal(failures.length, 1, 'logged once');
  assert.equal(failures[0]!['code'], 'ECONNREFUSED');
  store.close();
  await expectFdsBackTo('self', baseline, 5000, 'no fd left');
});

test('READY=1 does not wait for a manager that is not reading, and arrives once it reads', async () => {
  const { sm } = setup();
  const saved = process.env['NOTIFY_SOCKET'];
  process.env['NOTIFY_SOCKET'] = sm.socketPath;
  try {
    sm.pause({ fill: true });
    assert.equal(sdNotify({ READY: 1, STATUS: 'serving' }), true);
    assert.equal(sdNotify({ STATUS: 'still serving' }), true);
    sm.resume();
    await waitFor(() => sm.notifications.length >= 2, 20_000, 'READY=1 and STATUS');
    assert.deepEqual(sm.notifications, ['READY=1\nSTATUS=serving\n', 'STATUS=still serving\n'], 'in order, once each');
  } finally {
    if (saved === undefined) delete process.env['NOTIFY_SOCKET'];
    else process.env['NOTIFY_SOCKET'] = saved;
    sm.close();
  }
});

test('kvmchand keeps serving while its manager is not reading: start, vchans, stop', async () => {
  const { dir, sm } = setup();
  const runtimeDir = path.join(dir, 'run');
  fs.mkdirSync(runtimeDir);
  const logFile = path.join(dir, 'kvmchand.log');
  const tag = `kvmchan-nqd-${process.pid}`;
  // Passed at start and not ours: the daemon closes them and removes them from the store — the
  // first notifications it sends, before it even listens.
  sm.put('some-other-program', marker(`${tag}-other`));
  sm.put('kvmchan/qmp/gone-vm/ctl/shm', marker(`${tag}-gone`));
  sm.pause({ fill: true });
  const child = await sm.startDaemon({ runtimeDir, logFile, startTimeoutMs: 30_000 });
  try {
    // A vchan set up and 1 MiB moved through it while every notification waits.
    const server = await within(Vchan.listen({ runtimeDir, port: 5300 }), 20_000, 'listen');
    const client = await within(Vchan.connect({ runtimeDir, port: 5300 }), 20_000, 'connect');
    try {
      const data = new Prng(seedFromEnv(0x0b10c)).bytes(1 << 20);
      const writing = server.write(data);
      const got: Buffer[] = [];
      let n = 0;
      while (n < data.length) {
        const chunk = await within(client.read(), 20_000, `read at ${n}`);
        assert.notEqual(chunk, null);
        got.push(chunk!);
        n += chunk!.length;
      }
      await within(writing, 20_000, 'write');
      const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
      assert.equal(sha(Buffer.concat(got)), sha(data));
    } finally {
      client.close();
      server.close();
    }
    assert.ok(
      fdTargets(child.pid!).every((t) => !t.includes(tag)),
      'the fds that are not ours are closed already',
    );
    assert.deepEqual(sm.removed, [], 'the manager has read nothing yet');

    sm.resume();
    await waitFor(
      () => {
        sm.drain();
        return sm.removed.length >= 2 && sm.notifications.some((m) => m.includes('READY=1'));
      },
      20_000,
      'the removals and READY=1',
    );
    assert.deepEqual([...sm.removed].sort(), ['kvmchan/qmp/gone-vm/ctl/shm', 'some-other-program'], 'each removal once');
    assert.equal(sm.notifications.filter((m) => m.includes('READY=1')).length, 1, 'READY=1 once');
    assert.deepEqual(sm.names, [], 'the store is empty');
    const log = fs.readFileSync(logFile, 'utf8');
    assert.match(log, /not reading its notification socket/);

    // Stopping with the socket full again: STOPPING=1 does not hold the daemon up.
    sm.pause({ fill: true });
    await within(stopDaemon(child), 20_000, 'kvmchand stopping');
    assert.equal(child.exitCode, 0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    sm.close();
  }
});
