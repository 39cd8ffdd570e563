// The server's byte sequence, checked message by message by the independent test client
// (test/helpers/ivshmem-test-client.ts) against docs/ivshmem.md §1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { IvshmemServer } from '../../src/ivshmem/server.js';
import { native } from '../../src/native.js';
import { IvshmemTestClient, fdKind, initialSequence, joinSequence } from '../helpers/ivshmem-test-client.js';
import { drain, memfd, nextEvent, tempDir } from './util.js';
import { sleep, waitFor } from '../helpers/wait.js';

const MiB = 1 << 20;

test('first client: version 0, id 1, -1 + shm fd, host peer 0 × vectors, own id × vectors', async () => {
  const t = tempDir();
  const shm = memfd(MiB);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 3 }).listen();
  const c = IvshmemTestClient.connect(dev.socketPath);
  try {
    const fds = await c.expectSequence(initialSequence(1, [0], 3));
    await c.expectSilence();
    // -1 carries a regular file (memfd) of exactly the device size.
    const shmFd = fds[2]!;
    assert.match(fdKind(shmFd), /^\/memfd:kvmchan-test/);
    assert.equal(fs.fstatSync(shmFd).size, MiB);
    for (const fd of fds.slice(3)) assert.equal(fdKind(fd!), 'anon_inode:[eventfd]');
    // The eventfds are the server's: ringing "peer 0 vector v" wakes the host peer on v,
    // and the host ringing peer 1 vector v lands on the client's own eventfd v.
    const host = dev.host!;
    for (let v = 0; v < 3; v++) {
      native.eventfdWrite(fds[3 + v]!, 1);
      assert.equal(drain(host.interruptFd(v)), 1, `host vector ${v}`);
      host.doorbell(1, v);
      assert.equal(drain(fds[6 + v]!), 1, `client vector ${v}`);
    }
    assert.deepEqual(host.peers(), [1]);
    assert.equal(host.peerVectors(1), 3);
  } finally {
    c.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('the exact bytes are signed 64-bit little-endian', async () => {
  const t = tempDir();
  const shm = memfd(4096);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 1, firstPeerId: 0x1234, hostPeer: false }).listen();
  const c = IvshmemTestClient.connect(dev.socketPath);
  try {
    const version = await c.next();
    assert.equal(version.bytes.toString('hex'), '0000000000000000');
    const id = await c.next();
    assert.equal(id.bytes.toString('hex'), '3412000000000000');
    const shmMsg = await c.next();
    assert.equal(shmMsg.bytes.toString('hex'), 'ffffffffffffffff');
    assert.notEqual(shmMsg.fd, null);
    const own = await c.next();
    assert.equal(own.bytes.toString('hex'), '3412000000000000');
    assert.notEqual(own.fd, null);
    native.close(shmMsg.fd!);
    native.close(own.fd!);
    await c.expectSilence();
  } finally {
    c.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('without a host peer the first client gets id 0 and sees no other peer', async () => {
  const t = tempDir();
  const shm = memfd(64 * 1024);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 2, hostPeer: false }).listen();
  assert.equal(dev.host, null);
  const a = IvshmemTestClient.connect(dev.socketPath);
  const b = IvshmemTestClient.connect(dev.socketPath);
  try {
    const fa = await a.expectSequence(initialSequence(0, [], 2));
    const fb = await b.expectSequence(initialSequence(1, [0], 2));
    const fa2 = await a.expectSequence(joinSequence(1, 2));
    // b's copy of "peer 0 vector 1" and a's own vector 1 are the same eventfd.
    native.eventfdWrite(fb[4]!, 5);
    assert.equal(drain(fa[4]!), 5);
    // a's copy of "peer 1 vector 0" is b's own vector 0.
    native.eventfdWrite(fa2[0]!, 1);
    assert.equal(drain(fb[5]!), 1);
  } finally {
    a.close();
    b.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('join and leave notices: every existing client hears about every new one, and leaves without fd', async () => {
  const t = tempDir();
  const shm = memfd(MiB);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors: 2 }).listen();
  const joins: number[] = [];
  const leaves: number[] = [];
  dev.on('peer-join', (p) => joins.push(p.id));
  dev.on('peer-leave', (p) => leaves.push(p.id));
  const hostJoins: number[] = [];
  const hostLeaves: number[] = [];
  dev.host!.on('peer-join', (id) => hostJoins.push(id));
  dev.host!.on('peer-leave', (id) => hostLeaves.push(id));
  const c1 = IvshmemTestClient.connect(dev.socketPath);
  const c2 = IvshmemTestClient.connect(dev.socketPath);
  const c3 = IvshmemTestClient.connect(dev.socketPath);
  try {
    await c1.expectSequence(initialSequence(1, [0], 2));
    await c2.expectSequence(initialSequence(2, [0, 1], 2));
    await c3.expectSequence(initialSequence(3, [0, 1, 2], 2));
    await c1.expectSequence([...joinSequence(2, 2), ...joinSequence(3, 2)]);
    await c2.expectSequence(joinSequence(3, 2));
    await c1.expectSilence(20);
    await c2.expectSilence(20);
    await c3.expectSilence(20);

    // c2 leaves: c1 and c3 get exactly "2" with no fd.
    const left = nextEvent(dev, 'peer-leave');
    c2.close();
    await left;
    await c1.expectSequence([{ value: 2, fd: false }]);
    await c3.expectSequence([{ value: 2, fd: false }]);
    assert.deepEqual(
      dev.peers().map((p) => p.id),
      [0, 1, 3],
    );

    // The lowest free id is reused.
    const c4 = IvshmemTestClient.connect(dev.socketPath);
    try {
      await c4.expectSequence(initialSequence(2, [0, 1, 3], 2));
      await c1.expectSequence(joinSequence(2, 2));
      await c3.expectSequence(joinSequence(2, 2));
    } finally {
      c4.close();
    }
    await c1.expectSequence([{ value: 2, fd: false }]);
    await c3.expectSequence([{ value: 2, fd: false }]);

    // A local peer (the host side adds one) is announced like any other.
    const extra = dev.addLocalPeer();
    assert.equal(extra.ivPosition, 2);
    await c1.expectSequence(joinSequence(2, 2));
    extra.close();
    await c1.expectSequence([{ value: 2, fd: false }]);
    await c3.expectSequence([...joinSequence(2, 2), { value: 2, fd: false }]);

    // (the host peer 0 joined in the constructor, before the listener was attached)
    assert.deepEqual(joins, [1, 2, 3, 2, 2]);
    assert.deepEqual(leaves, [2, 2, 2]);
    assert.deepEqual(hostJoins, [1, 2, 3, 2, 2]);
    assert.deepEqual(hostLeaves, [2, 2, 2]);
  } finally {
    c1.close();
    c3.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('addSocket: a connection on a fixed-id socket always gets that id; a second one is refused', async () => {
  const t = tempDir();
  const shm = memfd(MiB);
  const dev = new IvshmemServer({ socketPath: t.sock('primary.sock'), shmFd: shm, vectors: 1 })
    .listen()
    .addSocket(t.sock('vm7.sock'), 7)
    .addSocket(t.sock('vm9.sock'), 9);
  const rejected: string[] = [];
  dev.on('client-rejected', (r) => rejected.push(r.reason));
  // Accept order across sockets is the poll order: connect one at a time.
  const b = IvshmemTestClient.connect(t.sock('vm9.sock'));
  await b.expectSequence(initialSequence(9, [0], 1));
  const a = IvshmemTestClient.connect(t.sock('vm7.sock'));
  await a.expectSequence(initialSequence(7, [0, 9], 1));
  const p = IvshmemTestClient.connect(t.sock('primary.sock'));
  try {
    // The primary socket never hands out reserved ids.
    await p.expectSequence(initialSequence(1, [0, 7, 9], 1));
    const dup = IvshmemTestClient.connect(t.sock('vm7.sock'));
    try {
      assert.equal((await dup.expectEof()).length, 0, 'refused before anything was sent');
    } finally {
      dup.close();
    }
    assert.deepEqual(rejected, ['peer id 7 is already connected']);
    assert.throws(() => dev.addSocket(t.sock('x.sock'), 7), /reserved/);
    assert.throws(() => dev.addSocket(t.sock('x.sock'), 0), /reserved/);
  } finally {
    a.close();
    b.close();
    p.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});

test('a client that does not read: everything is queued and arrives consistent and in order', async (tc) => {
  const t = tempDir();
  const shm = memfd(MiB);
  const vectors = 256;
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: shm, vectors, maxClients: 8 }).listen();
  const clients: IvshmemTestClient[] = [];
  try {
    // Three readers first, so a newcomer's initial sequence is 3 + 5 × 256 messages: far
    // more fd-carrying messages than a socket buffer holds (~278 with default wmem).
    for (let i = 1; i <= 3; i++) {
      const c = IvshmemTestClient.connect(dev.socketPath);
      clients.push(c);
      const peers = Array.from({ length: i }, (_, k) => k);
      for (const fd of await c.expectSequence(initialSequence(i, peers, vectors))) if (fd !== null) native.close(fd);
      c.received.length = 0;
      for (const prev of clients.slice(0, -1)) {
        for (const fd of await prev.expectSequence(joinSequence(i, vectors))) native.close(fd!);
        prev.received.length = 0;
      }
    }
    const slow = IvshmemTestClient.connect(dev.socketPath);
    await waitFor(() => dev.clientCount === 4, 2000, 'slow client admitted');
    // While it sleeps, peers 1 and 2 leave (their join messages to it are partly in its socket
    // buffer, partly still queued) and a newcomer takes id 1.
    clients[0]!.close();
    clients[1]!.close();
    await waitFor(() => dev.clientCount === 2);
    const late = IvshmemTestClient.connect(dev.socketPath);
    clients.push(late);
    await waitFor(() => dev.clientCount === 3);
    await sleep(20);

    // Replay what the slow client receives through a model of QEMU's peer table.
    const before = process.hrtime.bigint();
    const header = await slow.expectSequence(initialSequence(4, [], 0), 2000);
    native.close(header[2]!);
    slow.received.length = 0;
    const table = new Map<number, number[]>();
    const log: string[] = [];
    const done = (): boolean => [0, 1, 3, 4].every((id) => table.get(id)?.length === vectors) && table.size === 4;
    let messages = 3;
    while (!done()) {
      const m = await slow.next(5000);
      messages++;
      const id = Number(m.value);
      assert.ok(id >= 0 && id <= 4, `unexpected value ${m.value}`);
      if (m.fd === null) {
        assert.ok((table.get(id)?.length ?? 0) > 0, `leave of ${id} that was never announced`);
        for (const fd of table.get(id)!) native.close(fd);
        table.delete(id);
        log.push(`-${id}`);
      } else {
        const fds = table.get(id) ?? [];
        if (fds.length === 0) log.push(`+${id}`);
        assert.ok(fds.length < vectors, `more than ${vectors} eventfds for ${id}`);
        fds.push(m.fd);
        table.set(id, fds);
      }
    }
    const ms = Number(process.hrtime.bigint() - before) / 1e6;
    tc.diagnostic(`late reader: ${messages} messages in ${ms.toFixed(1)} ms; peer events ${log.join(' ')}`);
    await slow.expectSilence(20);
    // The fds it ended up with are the live ones: ring the host, get rung by the host.
    native.eventfdWrite(table.get(0)![vectors - 1]!, 1);
    assert.equal(drain(dev.host!.interruptFd(vectors - 1)), 1);
    dev.host!.doorbell(4, 17);
    assert.equal(drain(table.get(4)![17]!), 1);
    for (const fds of table.values()) for (const fd of fds) native.close(fd);
    slow.close();
  } finally {
    for (const c of clients) c.close();
    dev.close();
    native.close(shm);
    t.cleanup();
  }
});
