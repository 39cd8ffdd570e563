// Misbehaving clients, limits, admission, socket files, fd leaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { IvshmemServer, type PeerInfo } from '../../src/ivshmem/server.js';
import { SocketDevice } from '../../src/ivshmem/socket-device.js';
import { native } from '../../src/native.js';
import { IvshmemTestClient, initialSequence, joinSequence, openFdCount } from '../helpers/ivshmem-test-client.js';
import { drain, memfd, nextEvent, tempDir } from './util.js';
import { waitFor } from '../helpers/wait.js';

test('a client that sends anything is dropped; the others carry on', async () => {
  const t = tempDir();
  const shm = memfd(1 << 16);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 2 }).listen();
  const good = await SocketDevice.connect(dev.socketPath, { vectors: 2 });
  const bad = IvshmemTestClient.connect(dev.socketPath);
  const bad2 = IvshmemTestClient.connect(dev.socketPath);
  try {
    await bad.expectSequence(initialSequence(2, [0, 1], 2));
    await bad2.expectSequence(initialSequence(3, [0, 1, 2], 2));
    await waitFor(() => good.peers().length === 3);
    const violation = nextEvent<[PeerInfo, string]>(dev, 'protocol-violation');
    bad.send(Buffer.from('hello'));
    const [who, detail] = await violation;
    assert.equal(who.id, 2);
    assert.equal(detail, 'sent 5 bytes');
    // The offender sees EOF (after the join of 3 it had not read); everybody else sees it leave.
    assert.equal((await bad.expectEof()).length, 16);
    await bad2.expectSequence([{ value: 2, fd: false }]);
    await waitFor(() => !good.peers().includes(2));

    // Sending an fd is just as bad (and the fd does not leak into the server).
    const efd = native.eventfd(0, 0);
    const v2 = nextEvent<[PeerInfo, string]>(dev, 'protocol-violation');
    bad2.send(Buffer.alloc(8), [efd]);
    native.close(efd);
    assert.equal((await v2)[1], 'sent 8 bytes and 1 fds');
    await bad2.expectEof();
    await waitFor(() => !good.peers().includes(3));

    // The well-behaved client still works both ways.
    good.doorbell(0, 1);
    assert.equal(drain(dev.host!.interruptFd(1)), 1);
    dev.host!.doorbell(1, 0);
    assert.equal(drain(good.interruptFd(0)), 1);
    assert.deepEqual(good.peers(), [0]);
    assert.deepEqual(
      dev.peers().map((p) => p.id),
      [0, 1],
    );
  } finally {
    bad.close();
    bad2.close();
    good.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('client limit: the extra connection is closed before any byte is sent', async () => {
  const t = tempDir();
  const shm = memfd(4096);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 1, maxClients: 2 }).listen();
  const a = IvshmemTestClient.connect(dev.socketPath);
  const b = IvshmemTestClient.connect(dev.socketPath);
  try {
    await a.expectSequence(initialSequence(1, [0], 1));
    await b.expectSequence(initialSequence(2, [0, 1], 1));
    await a.expectSequence(joinSequence(2, 1));
    const rejected = nextEvent<[{ reason: string }]>(dev, 'client-rejected');
    const c = IvshmemTestClient.connect(dev.socketPath);
    try {
      assert.equal((await c.expectEof()).length, 0);
      assert.match((await rejected)[0].reason, /client limit 2/);
    } finally {
      c.close();
    }
    await a.expectSilence(20);
    // A slot frees up when a client leaves.
    b.close();
    await a.expectSequence([{ value: 2, fd: false }]);
    const d = IvshmemTestClient.connect(dev.socketPath);
    try {
      await d.expectSequence(initialSequence(2, [0, 1], 1));
    } finally {
      d.close();
    }
  } finally {
    a.close();
    b.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('authorize sees SO_PEERCRED and the id; a refusal sends nothing', async () => {
  const t = tempDir();
  const shm = memfd(4096);
  const seen: { pid: number | undefined; id: number }[] = [];
  let allow = false;
  const dev = new IvshmemServer({
    socketPath: t.sock('d.sock'),
    shmFd: shm,
    vectors: 1,
    authorize: ({ cred, peerId }) => {
      seen.push({ pid: cred?.pid, id: peerId });
      return allow || 'not on the list';
    },
  }).listen();
  try {
    const rejected = nextEvent<[{ reason: string }]>(dev, 'client-rejected');
    const a = IvshmemTestClient.connect(dev.socketPath);
    assert.equal((await a.expectEof()).length, 0);
    a.close();
    assert.equal((await rejected)[0].reason, 'not on the list');
    allow = true;
    const b = IvshmemTestClient.connect(dev.socketPath);
    await b.expectSequence(initialSequence(1, [0], 1));
    b.close();
    assert.deepEqual(seen, [
      { pid: process.pid, id: 1 },
      { pid: process.pid, id: 1 },
    ]);
    assert.deepEqual(dev.peers()[1]?.cred?.pid, process.pid);
  } finally {
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('socket files: stale ones are replaced, live ones and non-sockets are not, close removes ours', async () => {
  const t = tempDir();
  const shm = memfd(4096);
  try {
    // A stale socket: bound, then its listener went away without unlinking.
    const stalePath = t.sock('stale.sock');
    native.close(native.listenUnix(stalePath, 'stream', 1, 0o600));
    assert.ok(fs.existsSync(stalePath));
    const dev = new IvshmemServer({ socketPath: stalePath, shmFd: shm, vectors: 1 }).listen();
    const c = IvshmemTestClient.connect(stalePath);
    await c.expectSequence(initialSequence(1, [0], 1));
    c.close();

    // A live one belongs to somebody else.
    const other = new IvshmemServer({ socketPath: stalePath, shmFd: shm, vectors: 1 });
    assert.throws(() => other.listen(), /in use by a live server/);
    other.close();
    // A regular file is never deleted.
    const filePath = t.sock('file');
    fs.writeFileSync(filePath, 'keep me');
    const third = new IvshmemServer({ socketPath: filePath, shmFd: shm, vectors: 1 });
    assert.throws(() => third.listen(), /not a socket/);
    third.close();
    assert.equal(fs.readFileSync(filePath, 'utf8'), 'keep me');
    // Mode defaults to 0600.
    assert.equal(fs.statSync(stalePath).mode & 0o777, 0o600);

    dev.close();
    assert.equal(fs.existsSync(stalePath), false, 'close() removed the socket');
    // A path replaced by someone else after we bound it is left alone.
    const dev2 = new IvshmemServer({ socketPath: t.sock('moved.sock'), shmFd: shm, vectors: 1 }).listen();
    fs.rmSync(dev2.socketPath);
    fs.writeFileSync(dev2.socketPath, 'new owner');
    dev2.close();
    assert.equal(fs.readFileSync(dev2.socketPath, 'utf8'), 'new owner');
  } finally {
    native.close(shm);
    t.cleanup();
  }
});

test('no fd or mapping leaks over many join/leave cycles (socket clients, test clients, local peers)', async () => {
  const t = tempDir();
  const shm = memfd(1 << 16);
  const fdsBefore = openFdCount();
  const mapsBefore = native.mappingCount();
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 4, maxClients: 4 }).listen();
  const anchor = await SocketDevice.connect(dev.socketPath, { vectors: 4 });
  const fdsAnchored = openFdCount();
  try {
    for (let i = 0; i < 50; i++) {
      const a = await SocketDevice.connect(dev.socketPath, { vectors: 4 });
      const b = IvshmemTestClient.connect(dev.socketPath);
      await b.expectSequence(initialSequence(3, [0, 1, 2], 4));
      await waitFor(() => anchor.peers().length === 3);
      const local = dev.addLocalPeer();
      const m = a.map(0, 4096);
      new Uint8Array(m)[0] = i;
      assert.equal(new Uint8Array(anchor.map(0, 4096))[0], i);
      const bad = IvshmemTestClient.connect(dev.socketPath);
      await bad.next();
      bad.send(Buffer.from([1]));
      await bad.expectEof();
      bad.close();
      local.close();
      b.close();
      a.close();
      await waitFor(() => anchor.peers().length === 1 && dev.clientCount === 1, 2000, 'everyone gone');
    }
    anchor.close();
    assert.equal(native.mappingCount(), mapsBefore);
    await waitFor(() => dev.clientCount === 0);
    assert.ok(openFdCount() < fdsAnchored);
  } finally {
    anchor.close();
    dev.close();
  }
  // Let the libuv handles close.
  await new Promise((r) => setImmediate(r));
  assert.equal(openFdCount(), fdsBefore, 'fds back to the starting count');
  assert.equal(native.mappingCount(), mapsBefore);
  native.close(shm);
  t.cleanup();
});

test('disconnect(id) drops one client; close() drops all of them and removes the socket', async () => {
  const t = tempDir();
  const shm = memfd(4096);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 1 }).listen();
  const a = IvshmemTestClient.connect(dev.socketPath);
  const b = IvshmemTestClient.connect(dev.socketPath);
  try {
    await a.expectSequence([...initialSequence(1, [0], 1), ...joinSequence(2, 1)]);
    await b.expectSequence(initialSequence(2, [0, 1], 1));
    const left = nextEvent<[PeerInfo, string]>(dev, 'peer-leave');
    assert.equal(dev.disconnect(2, 'VM destroyed'), true);
    assert.deepEqual(
      (await left).map((x) => (typeof x === 'string' ? x : x.id)),
      [2, 'VM destroyed'],
    );
    assert.equal((await b.expectEof()).length, 0);
    await a.expectSequence([{ value: 2, fd: false }]);
    assert.equal(dev.disconnect(2), false);
    dev.close();
    assert.equal((await a.expectEof()).length, 0);
    assert.equal(fs.existsSync(t.sock('d.sock')), false);
    assert.equal(dev.clientCount, 0);
    dev.close();
  } finally {
    a.close();
    b.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});
