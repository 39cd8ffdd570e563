// Two real processes over a memfd and eventfds, no daemon: 1 GiB each
// way at once with random chunk sizes over 64 KiB rings, SHA-256 compared; and
// SIGKILL of one side mid-stream. Here the test itself plays the daemon's part
// of ring-protocol.md §5.3 (mark the dead side closed and kick the survivor).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native.js';
import { RingEndpoint } from '../../src/ring/endpoint.js';
import { AsyncRing } from '../../src/ring/async-ring.js';
import { EventFdWaiter } from '../../src/ring/eventfd-waiter.js';
import { initializeRegion, regionLength, OFF_CLIENT_STATE, STATE_CLOSED } from '../../src/ring/layout.js';
import { pump, type PumpResult } from '../helpers/ring-pump.js';
import { sleep } from '../helpers/wait.js';

const PEER = fileURLToPath(new URL('../helpers/ring-peer.js', import.meta.url));
const GIB = 1024 ** 3;
const fdCount = (): number => readdirSync('/proc/self/fd').length;

function setup(order: number) {
  const g = { c2sOrder: order, s2cOrder: order };
  const len = regionLength(g);
  const shm = native.memfdCreate('ring-test', len, true);
  const mapping = native.mmap(shm, len, 0, true);
  initializeRegion(mapping, 0, g);
  const serverWait = native.eventfd(0, 0o4000);
  const clientWait = native.eventfd(0, 0o4000);
  return { g, shm, mapping, serverWait, clientWait };
}

type Setup = ReturnType<typeof setup>;

function spawnPeer(s: Setup, sendBytes: number, recvBytes: number, seed: number) {
  // The child gets fd 3 = memfd, 4 = its wait eventfd, 5 = our (kick) eventfd.
  const child = spawn(
    process.execPath,
    [PEER, 'client', String(s.g.c2sOrder), String(s.g.s2cOrder), String(sendBytes), String(recvBytes), String(seed)],
    { stdio: ['ignore', 'pipe', 'inherit', s.shm, s.clientWait, s.serverWait] },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal, out });
    }),
  );
  return { child, done };
}

function serverSide(s: Setup) {
  native.close(s.shm); // the mapping and the child's copy keep the memory
  const waiter = new EventFdWaiter(s.serverWait, s.clientWait);
  const ep = new RingEndpoint(s.mapping, 0, { role: 'server', ...s.g, bulkCopy: native.copyBytes }, waiter.kick);
  return { ep, waiter, ring: new AsyncRing(ep, waiter) };
}

test('1 GiB each way at once between two processes, random chunks, 64 KiB rings', { timeout: 300_000 }, async () => {
  const fds0 = fdCount();
  const maps0 = native.mappingCount();
  const s = setup(16);
  const peer = spawnPeer(s, GIB, GIB, 4242);
  const { ep, waiter, ring } = serverSide(s);
  const mine = await pump(ring, { sendBytes: GIB, recvBytes: GIB, seed: 777 });
  const exit = await peer.done;
  assert.equal(exit.code, 0, `peer exited ${exit.code} ${exit.signal}`);
  const theirs = JSON.parse(exit.out) as PumpResult;
  assert.equal(mine.sent, GIB);
  assert.equal(mine.received, GIB);
  assert.equal(theirs.received, GIB);
  assert.equal(theirs.receivedHash, mine.sentHash, 'server → client stream intact');
  assert.equal(mine.receivedHash, theirs.sentHash, 'client → server stream intact');
  ep.close();
  waiter.close();
  native.munmap(s.mapping);
  assert.equal(fdCount(), fds0, 'no fd leaked');
  assert.equal(native.mappingCount(), maps0, 'no mapping leaked');
});

test('SIGKILL of the peer mid-stream: the survivor drains, then sees end of stream', { timeout: 120_000 }, async () => {
  const s = setup(16);
  // The child sends far more than it will get to; we kill it while it writes.
  const peer = spawnPeer(s, 64 * GIB, 0, 99);
  const { ep, waiter, ring } = serverSide(s);
  const control = new Int32Array(s.mapping, 0, 1024);
  // Read slowly at first so the ring is full of unread data when the kill lands.
  const buf = Buffer.allocUnsafe(65536);
  let received = 0;
  while (received < 8 * 1024 * 1024) {
    const n = await ring.read(buf);
    assert.ok(n > 0);
    received += n;
  }
  await sleep(50); // let the peer fill the ring again
  const pending = ep.peekReadable();
  peer.child.kill('SIGKILL');
  const exit = await peer.done;
  assert.equal(exit.signal, 'SIGKILL');
  // What the daemon does on a death (ring-protocol.md §5.3).
  Atomics.store(control, OFF_CLIENT_STATE / 4, STATE_CLOSED);
  native.eventfdWrite(s.serverWait, 1);
  const t0 = Date.now();
  let drained = 0;
  for (;;) {
    const n = await ring.read(buf);
    if (n < 0) break;
    drained += n;
  }
  assert.ok(drained >= pending, `drained ${drained} ≥ ${pending} bytes that were in the ring at the kill`);
  assert.ok(Date.now() - t0 < 5000, 'end of stream seen promptly');
  assert.equal(ep.peerState, 'closed');
  await assert.rejects(ring.write(Buffer.alloc(1)), { code: 'KVMCHAN_E_CLOSED' });
  ep.close();
  waiter.close();
  native.munmap(s.mapping);
});
