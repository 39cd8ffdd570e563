// PoolManager (src/daemon/pools/pool-manager.ts): pools of ivshmem devices as the
// registry's VchanResourceFactory, with simulated guests attached through SocketDevice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../../src/native.js';
import {
  HEADER_SIZE,
  MAGIC,
  OFF_CLIENT_STATE,
  OFF_SERVER_STATE,
  STATE_WAITING,
  STATE_CONNECTED,
  regionLength,
  type RingGeometry,
} from '../../src/ring/layout.js';
import type { VchanResources, EndpointAccess } from '../../src/daemon/registry/vchan-resources.js';
import { PoolResources } from '../../src/daemon/pools/pool-resources.js';
import { errnoOf, fixture, pageRound, readable, rejectsWith } from './fixture.js';
import { waitFor, sleep } from '../helpers/wait.js';

const geo = (c2sOrder: number, s2cOrder = c2sOrder): RingGeometry => ({ c2sOrder, s2cOrder });
const SMALL = geo(10);

function fdsOf(a: EndpointAccess): { shm: number; wait: number; kick: number } {
  assert.equal(a.kind, 'fds');
  if (a.kind !== 'fds') throw new Error('unreachable');
  return a;
}

function deviceOf(a: EndpointAccess): { pool: number; vector: number; peerId: number; peerVector: number } {
  assert.equal(a.kind, 'device');
  if (a.kind !== 'device') throw new Error('unreachable');
  return a;
}

function poolOf(res: VchanResources): number {
  assert.ok(res instanceof PoolResources);
  return res.poolId;
}

test('a guest gets its first host pool at once; vchans wait for it to attach (EAGAIN, whenCapacity)', async () => {
  const f = fixture();
  try {
    f.pm.addDomain(5);
    f.pm.addDomain(5); // idempotent
    assert.equal(f.announced.length, 1);
    const a = f.announced[0]!;
    const socketPath = path.join(f.dir, 'domains', '5', 'pool-1.sock');
    assert.deepEqual(a, { domain: 5, pool: 1, peerId: 1, vectors: 64, size: 64 * 1024 * 1024, socket: 'pool-1.sock', socketPath });
    assert.equal(fs.statSync(path.join(f.dir, 'domains', '5')).mode & 0o777, 0o700);
    assert.ok(fs.lstatSync(socketPath).isSocket());
    assert.deepEqual(f.pm.poolsOf(5), [{ pool: 1, peerId: 1, vectors: 64, size: 64 * 1024 * 1024, socket: 'pool-1.sock', socketPath }]);
    assert.deepEqual(f.pm.poolsOf(6), []);
    assert.equal(f.pm.pools()[0]!.state, 'pending');

    // Not attached yet: refused with EAGAIN, and no second pool (one is on its way).
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 5)),
      'EAGAIN',
    );
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 5, 0)),
      'EAGAIN',
    );
    assert.equal(f.announced.length, 1);
    let resolved = false;
    const ready = f.pm.whenCapacity(0, 5, 3000).then(() => {
      resolved = true;
    });
    // A negative check: give a wrong early resolution the chance to happen (no event to wait on).
    await sleep(20);
    assert.equal(resolved, false, 'whenCapacity waits for the member');
    const guest = await f.join(a);
    assert.equal(guest.ivPosition, 1);
    assert.equal(guest.shm.size, 64 * 1024 * 1024);
    assert.deepEqual(guest.peers(), [0], 'only the host shares this pool');
    await ready;
    const res = f.pm.create(SMALL, 0, 5);
    assert.equal(poolOf(res), 1);
    const info = f.pm.pools()[0]!;
    assert.equal(info.state, 'ready');
    assert.deepEqual(info.joined, [5]);
    assert.equal(info.vchans, 1);
    assert.equal(info.freeVectors, 63);
    // Already room: resolves at once.
    await f.pm.whenCapacity(5, 0, 0);
    res.release();
    res.release(); // idempotent
    assert.equal(f.pm.pools()[0]!.vchans, 0);
    f.close();
  } finally {
    f.dispose();
  }
});

test('host endpoints get working fds, guests get device coordinates (data and kicks both ways)', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8 });
  try {
    f.pm.addDomain(1);
    const guest = await f.join(f.of(1)[0]!);
    // Host process = server, guest = client.
    const res = f.pm.create(geo(12, 13), 0, 1);
    const host = fdsOf(res.server);
    const g = deviceOf(res.client);
    assert.deepEqual(g, { kind: 'device', pool: 1, vector: g.vector, peerId: 0, peerVector: g.vector });
    const v = g.vector;
    assert.equal(res.shmLength, regionLength(geo(12, 13)));
    assert.equal(res.shmOffset % 4096, 0);
    assert.equal(native.fdSize(host.shm), 1 << 20);

    // The region is initialised, seen the same way by the daemon, the host process and the guest.
    assert.equal(Atomics.load(res.control, 0), MAGIC | 0);
    assert.equal(Atomics.load(res.control, OFF_CLIENT_STATE / 4), STATE_WAITING);
    assert.equal(Atomics.load(res.control, OFF_SERVER_STATE / 4), STATE_CONNECTED);
    const len = pageRound(res.shmLength);
    const hostMap = native.mmap(host.shm, len, res.shmOffset, true);
    const guestMap = guest.map(res.shmOffset, len);
    try {
      assert.equal(new Int32Array(guestMap, 0, 1)[0], MAGIC | 0);
      const payload = Buffer.from('through the pool, host to guest');
      new Uint8Array(hostMap).set(payload, HEADER_SIZE + 100);
      assert.deepEqual(Buffer.from(guestMap, HEADER_SIZE + 100, payload.length), payload);
      new Uint8Array(guestMap).set([9, 8, 7], HEADER_SIZE + 5000);
      assert.deepEqual([...new Uint8Array(hostMap, HEADER_SIZE + 5000, 3)], [9, 8, 7]);
    } finally {
      native.munmap(hostMap);
      guest.unmap(guestMap);
    }

    // Host kicks guest: its kick fd is the guest's interrupt v.
    native.eventfdWrite(host.kick, 1);
    assert.equal(await readable(guest.interruptFd(v)), 1);
    // Guest kicks host: doorbell (peer 0, vector v) = the host's wait fd.
    guest.doorbell(g.peerId, g.peerVector);
    assert.equal(await readable(host.wait), 1);
    // The daemon's kicks on behalf of a dead peer reach the same places.
    res.kickServer();
    assert.equal(await readable(host.wait), 1);
    res.kickClient();
    assert.equal(await readable(guest.interruptFd(v)), 1);

    // The other direction: the guest serves, a host process connects.
    const res2 = f.pm.create(SMALL, 1, 0);
    const g2 = deviceOf(res2.server);
    const h2 = fdsOf(res2.client);
    assert.notEqual(g2.vector, v, 'one vector per vchan');
    assert.equal(g2.peerId, 0);
    assert.ok(
      res2.shmOffset >= res.shmOffset + len || res2.shmOffset + pageRound(res2.shmLength) <= res.shmOffset,
      'extents do not overlap',
    );
    guest.doorbell(0, g2.vector);
    assert.equal(await readable(h2.wait), 1);
    native.eventfdWrite(h2.kick, 1);
    assert.equal(await readable(guest.interruptFd(g2.vector)), 1);
    assert.equal(native.eventfdRead(host.wait), null, 'the other vchan was not woken');
    res.release();
    res2.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('vchans fill a pool, then spill into the next one', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 4, lowWater: 0 });
  try {
    f.pm.addDomain(3);
    await f.join(f.of(3)[0]!);
    const held: VchanResources[] = [];
    for (let i = 0; i < 4; i++) held.push(f.pm.create(SMALL, 0, 3));
    assert.deepEqual(held.map((r) => deviceOf(r.client).vector).sort(), [0, 1, 2, 3]);
    assert.ok(held.every((r) => poolOf(r) === 1));
    assert.equal(f.announced.length, 1, 'lowWater 0: no pool ahead of demand');
    // Full: EAGAIN, and the second pool is created and announced right away.
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 3, 0)),
      'EAGAIN',
    );
    assert.equal(f.of(3).length, 2);
    assert.equal(f.of(3)[1]!.pool, 2);
    assert.equal(f.of(3)[1]!.socket, 'pool-2.sock');
    const cap = f.pm.whenCapacity(3, 0, 3000);
    await f.join(f.of(3)[1]!);
    await cap;
    const next = f.pm.create(SMALL, 3, 0);
    assert.equal(poolOf(next), 2);
    held.push(next);
    // Freed space in the first pool is used again first.
    held.shift()!.release();
    const again = f.pm.create(SMALL, 0, 3);
    assert.equal(poolOf(again), 1);
    held.push(again);
    for (const r of held) r.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('a pool is added ahead of demand when vectors run low, and announced', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8, lowWater: 0.25 });
  try {
    f.pm.addDomain(2);
    await f.join(f.of(2)[0]!);
    const held: VchanResources[] = [];
    for (let i = 0; i < 6; i++) held.push(f.pm.create(SMALL, 0, 2));
    assert.equal(f.announced.length, 1, '2 of 8 vectors free is not below 25 %');
    held.push(f.pm.create(SMALL, 0, 2));
    assert.equal(f.announced.length, 2, '1 of 8 free: the next pool is on its way');
    assert.equal(f.of(2)[1]!.pool, 2);
    // While it is pending no third pool appears, however low the set runs.
    held.push(f.pm.create(SMALL, 0, 2));
    assert.equal(f.announced.length, 2);
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 2)),
      'EAGAIN',
    );
    assert.equal(f.announced.length, 2);
    await f.join(f.of(2)[1]!);
    const r = f.pm.create(SMALL, 0, 2);
    assert.equal(poolOf(r), 2);
    held.push(r);
    assert.deepEqual(
      f.pm.pools().map((p) => [p.pool, p.state, p.vchans]),
      [
        [1, 'ready', 8],
        [2, 'ready', 1],
      ],
    );
    for (const x of held) x.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('a pool is added ahead of demand when bytes run low', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 64, lowWater: 0.25 });
  try {
    f.pm.addDomain(2);
    await f.join(f.of(2)[0]!);
    const big = geo(17); // 4 KiB + 2 x 128 KiB = 260 KiB
    const held = [f.pm.create(big, 0, 2), f.pm.create(big, 0, 2)];
    assert.equal(f.announced.length, 1, '49 % free');
    held.push(f.pm.create(big, 0, 2));
    assert.equal(f.announced.length, 2, '23.8 % of the bytes free: next pool added');
    // The fourth does not fit what is left of pool 1 (244 KiB): EAGAIN until pool 2 is attached.
    assert.equal(
      errnoOf(() => f.pm.create(big, 0, 2)),
      'EAGAIN',
    );
    // whenCapacity waits for room for that request, not for any room.
    const cap = f.pm.whenCapacity(0, 2, 3000);
    let done = false;
    void cap.then(() => (done = true));
    held.push(f.pm.create(SMALL, 0, 2)); // small ones still fit pool 1
    // A negative check: give a wrong early resolution the chance to happen (no event to wait on).
    await sleep(20);
    assert.equal(done, false);
    await f.join(f.of(2)[1]!);
    await cap;
    held.push(f.pm.create(big, 0, 2));
    assert.equal(poolOf(held[4]!), 2);
    for (const x of held) x.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('maxPoolsPerDomain bounds growth: ENOSPC when every allowed pool is full', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 2, lowWater: 0, maxPoolsPerDomain: 2 });
  try {
    f.pm.addDomain(4);
    await f.join(f.of(4)[0]!);
    const held = [f.pm.create(SMALL, 0, 4), f.pm.create(SMALL, 0, 4)];
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 4)),
      'EAGAIN',
    );
    await f.join(f.of(4)[1]!);
    held.push(f.pm.create(SMALL, 0, 4), f.pm.create(SMALL, 0, 4));
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 4)),
      'ENOSPC',
    );
    assert.equal(f.announced.length, 2);
    // A guest pair counts against both guests' limits.
    f.pm.addDomain(5);
    f.pm.addDomain(6);
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 4, 5)),
      'ENOSPC',
      'domain 4 is in 2 pools already',
    );
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 5, 6)),
      'EAGAIN',
      'domains 5 and 6 may get a pair pool',
    );
    held.pop()!.release();
    const reused = f.pm.create(SMALL, 4, 0);
    assert.equal(poolOf(reused), 2, 'freed room is used again');
    held.push(reused);
    for (const x of held) x.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('maxPoolsPerSet: ahead-of-demand host pools leave a guest room for pair pools (ENOSPC names the limit)', async () => {
  // Scaled down from 500 host↔g1 + 500 g1↔g2 vchans with 16 pools per domain, 8 per set.
  const f = fixture({ poolSize: 1 << 20, poolVectors: 2, lowWater: 0.25, maxPoolsPerDomain: 4, maxPoolsPerSet: 2 });
  try {
    f.pm.addDomain(1);
    f.pm.addDomain(2);
    const held: VchanResources[] = [];
    const fill = async (a: number, b: number): Promise<string> => {
      for (;;) {
        try {
          held.push(f.pm.create(SMALL, a, b));
        } catch (err) {
          const e = err as { errnoName?: string; message: string };
          if (e.errnoName !== 'EAGAIN') return `${e.errnoName}: ${e.message}`;
          for (const ann of f.announced.filter((x) => !joined.has(`${x.domain}/${x.pool}`))) {
            joined.add(`${ann.domain}/${ann.pool}`);
            await f.join(ann);
          }
          await f.pm.whenCapacity(a, b, 2000);
        }
      }
    };
    const joined = new Set<string>();
    const hostErr = await fill(0, 1);
    assert.equal(held.length, 4, 'host↔1: 2 pools × 2 vectors');
    assert.match(hostErr, /^ENOSPC: .*maxPoolsPerSet 2/);
    const pairErr = await fill(1, 2);
    assert.equal(held.length, 8, 'guest 1 still had room for 2 pair pools');
    assert.match(pairErr, /^ENOSPC: .*(maxPoolsPerSet|maxPoolsPerDomain)/);
    assert.equal(f.pm.pools().filter((p) => p.members.includes(1)).length, 4);
    for (const x of held) x.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('guest↔guest vchans use a pool shared by exactly those two guests', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 4 });
  try {
    for (const d of [1, 2, 3]) f.pm.addDomain(d);
    assert.equal(f.announced.length, 3, 'one host pool each');
    // First request for the pair: the pair pool is created on demand.
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 2, 1)),
      'EAGAIN',
    );
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 1, 2)),
      'EAGAIN',
      'same pair, same pending pool',
    );
    assert.equal(f.announced.length, 5);
    const [toA, toB] = [f.of(1)[1]!, f.of(2)[1]!];
    assert.equal(toA.pool, 4);
    assert.equal(toB.pool, 4);
    assert.equal(toA.peerId, 1);
    assert.equal(toB.peerId, 2);
    assert.equal(toA.socketPath, path.join(f.dir, 'domains', '1', 'pool-4.sock'));
    assert.equal(toB.socketPath, path.join(f.dir, 'domains', '2', 'pool-4.sock'));
    assert.equal(f.of(3).length, 1, 'the third guest is told nothing');
    assert.deepEqual(fs.readdirSync(path.join(f.dir, 'domains', '3')), ['pool-3.sock'], 'and has no socket for it');
    assert.deepEqual(
      f.pm.poolsOf(1).map((p) => p.pool),
      [1, 4],
    );
    assert.deepEqual(
      f.pm.poolsOf(3).map((p) => p.pool),
      [3],
    );

    const cap = f.pm.whenCapacity(2, 1, 3000);
    const a = await f.join(toA);
    assert.equal(f.pm.pools().find((p) => p.pool === 4)!.state, 'pending', 'one member is not enough');
    const b = await f.join(toB);
    await cap;
    assert.equal(a.ivPosition, 1);
    assert.equal(b.ivPosition, 2);
    await waitFor(() => a.peers().includes(2), 2000, 'A to learn about B');
    assert.deepEqual(a.peers(), [0, 2]);
    assert.deepEqual(b.peers(), [0, 1]);
    const pair = f.pm.pools().find((p) => p.pool === 4)!;
    assert.deepEqual(pair.members, [1, 2]);
    assert.equal(pair.state, 'ready');

    // Server in B (domain 2), client in A (domain 1).
    const res = f.pm.create(geo(11), 2, 1);
    assert.equal(poolOf(res), 4);
    const sv = deviceOf(res.server);
    const cl = deviceOf(res.client);
    assert.deepEqual(sv, { kind: 'device', pool: 4, vector: sv.vector, peerId: 1, peerVector: sv.vector });
    assert.deepEqual(cl, { kind: 'device', pool: 4, vector: sv.vector, peerId: 2, peerVector: sv.vector });
    const v = sv.vector;
    const len = pageRound(res.shmLength);
    const mb = b.map(res.shmOffset, len);
    const ma = a.map(res.shmOffset, len);
    new Uint8Array(mb).set([0xb0, 0xb1], HEADER_SIZE);
    assert.deepEqual([...new Uint8Array(ma, HEADER_SIZE, 2)], [0xb0, 0xb1]);
    // Kicks go guest to guest, no host process involved.
    b.doorbell(sv.peerId, sv.peerVector);
    assert.equal(await readable(a.interruptFd(v)), 1);
    a.doorbell(cl.peerId, cl.peerVector);
    assert.equal(await readable(b.interruptFd(v)), 1);
    res.kickServer();
    assert.equal(await readable(b.interruptFd(v)), 1);
    res.kickClient();
    assert.equal(await readable(a.interruptFd(v)), 1);
    a.unmap(ma);
    b.unmap(mb);
    res.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('freed space is wiped before it is used again', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8 });
  try {
    f.pm.addDomain(1);
    const guest = await f.join(f.of(1)[0]!);
    const g = geo(14, 12);
    const first = f.pm.create(g, 1, 0);
    const offset = first.shmOffset;
    const len = pageRound(first.shmLength);
    const view = new Uint8Array(guest.map(offset, len));
    // The guest fills everything it can reach of its vchan (header included).
    view.fill(0xab);
    assert.equal(view[len - 1], 0xab);
    first.release();
    assert.ok(
      view.every((x) => x === 0),
      'the extent is zero after release',
    );
    // Same geometry lands on the same (first-fit) extent: nothing of the old vchan shows.
    const second = f.pm.create(g, 0, 1);
    assert.equal(second.shmOffset, offset);
    assert.ok(!view.includes(0xab), 'no byte of the freed vchan is visible');
    assert.equal(new Int32Array(view.buffer, 0, 1)[0], MAGIC | 0);
    assert.ok(
      view.subarray(HEADER_SIZE).every((x) => x === 0),
      'rings start empty',
    );
    // A larger vchan over the same pages after coalescing: still nothing.
    view.fill(0xcd);
    second.release();
    const third = f.pm.create(geo(15), 0, 1);
    assert.equal(third.shmOffset, offset);
    const wide = new Uint8Array(guest.map(offset, pageRound(third.shmLength)));
    assert.ok(!wide.includes(0xcd));
    third.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('a freed vector starts clean: kicks the old vchan left pending are drained, on both sides', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 2, lowWater: 0 });
  try {
    f.pm.addDomain(1);
    const guest = await f.join(f.of(1)[0]!);
    const eventfdCount = (fd: number): number => {
      const m = /eventfd-count:\s*([0-9a-f]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      return parseInt(m![1]!, 16);
    };
    const first = f.pm.create(SMALL, 0, 1);
    const v = deviceOf(first.client).vector;
    const hostWait = fdsOf(first.server).wait;
    // Kicks nobody consumed: the guest rang the host, the host rang the guest, then the vchan went.
    guest.doorbell(0, v);
    native.eventfdWrite(fdsOf(first.server).kick, 1);
    await waitFor(() => eventfdCount(hostWait) === 1 && eventfdCount(guest.interruptFd(v)) === 1, 2000, 'kicks pending');
    first.release();
    // The next vchan gets the same (lowest free) vector, and no stale wake-up with it.
    const second = f.pm.create(SMALL, 0, 1);
    assert.equal(deviceOf(second.client).vector, v);
    assert.equal(fdsOf(second.server).wait, hostWait);
    assert.equal(eventfdCount(hostWait), 0, 'host side drained');
    assert.equal(eventfdCount(guest.interruptFd(v)), 0, 'guest side drained');
    second.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('a member that leaves is reported; the pool is used again when it comes back', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8 });
  const left: [number, number][] = [];
  const joined: [number, number][] = [];
  f.pm.on('member-left', (d, p) => left.push([d, p]));
  f.pm.on('member-joined', (d, p) => joined.push([d, p]));
  try {
    f.pm.addDomain(7);
    const first = await f.join(f.of(7)[0]!);
    assert.deepEqual(joined, [[7, 1]]);
    const res = f.pm.create(SMALL, 0, 7);
    const kick = fdsOf(res.server).kick;
    first.close(); // the guest daemon dies
    await waitFor(() => left.length === 1, 2000, 'member-left');
    assert.deepEqual(left, [[7, 1]]);
    assert.equal(f.pm.pools()[0]!.state, 'pending');
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 7)),
      'EAGAIN',
    );
    assert.equal(f.announced.length, 1, 'no new pool while the old one waits for its member');
    // The host process's kick fd is our own dup: still a valid eventfd, ringing nobody.
    native.eventfdWrite(kick, 1);
    res.kickClient(); // nobody to ring: dropped
    const cap = f.pm.whenCapacity(0, 7, 3000);
    const again = await f.join(f.pm.poolsOf(7)[0]!);
    await cap;
    assert.deepEqual(joined, [
      [7, 1],
      [7, 1],
    ]);
    const res2 = f.pm.create(SMALL, 7, 0);
    assert.equal(poolOf(res2), 1);
    again.doorbell(0, deviceOf(res2.server).vector);
    assert.equal(await readable(fdsOf(res2.client).wait), 1);
    res.release();
    res2.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('whenCapacity times out with EAGAIN; a removed domain refuses its waiters and retires its pools', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 4 });
  try {
    f.pm.addDomain(1);
    f.pm.addDomain(2);
    await rejectsWith(f.pm.whenCapacity(0, 1, 30), 'EAGAIN');
    const waiting = f.pm.whenCapacity(1, 0, 5000);
    const hostPool = f.of(1)[0]!;
    const guest = await f.join(f.of(2)[0]!);
    // A pair pool 1:2 (guest 2 attached to it) and a live host↔2 vchan.
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 1, 2)),
      'EAGAIN',
    );
    const pairForB = f.of(2)[1]!;
    const b = await f.join(pairForB);
    let bClosed = false;
    b.on('close', () => (bClosed = true));
    const live = f.pm.create(SMALL, 2, 0);
    const maps = native.mappingCount();

    f.pm.removeDomain(1);
    await rejectsWith(waiting, 'ESRCH');
    assert.ok(!fs.existsSync(hostPool.socketPath), 'its pool socket is gone');
    assert.ok(!fs.existsSync(f.of(1)[1]!.socketPath));
    assert.ok(!fs.existsSync(pairForB.socketPath), "so is the other guest's socket of their pair pool");
    await waitFor(() => bClosed, 2000, 'the other member to be disconnected');
    assert.deepEqual(f.pm.poolsOf(1), []);
    assert.deepEqual(
      f.pm.poolsOf(2).map((p) => p.pool),
      [2],
    );
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 1)),
      'ESRCH',
    );
    await rejectsWith(f.pm.whenCapacity(0, 1, 10), 'ESRCH');
    assert.ok(!fs.existsSync(path.join(f.dir, 'domains', '1')), 'empty domain dir removed');

    // Domain 2 goes while a host process still holds a vchan with it: memory stays until release.
    f.pm.removeDomain(2);
    assert.deepEqual(
      f.pm.pools().map((p) => [p.pool, p.state, p.vchans]),
      [[2, 'retired', 1]],
    );
    assert.equal(Atomics.load(live.control, 0), MAGIC | 0, 'the control page is still mapped');
    live.kickServer();
    live.kickClient(); // both harmless now
    await waitFor(() => guest.closed, 2000, 'the guest to be disconnected');
    live.release();
    assert.equal(f.pm.poolCount, 0);
    assert.ok(native.mappingCount() < maps, 'the pool mapping went with its last vchan');
    f.close();
  } finally {
    f.dispose();
  }
});

test('host↔host vchans get a memfd of their own; refusals', async () => {
  const f = fixture({ poolSize: 1 << 20 });
  try {
    const res = f.pm.create(SMALL, 0, 0);
    assert.ok(!(res instanceof PoolResources));
    assert.equal(res.shmOffset, 0);
    const s = fdsOf(res.server);
    assert.equal(native.fdSize(s.shm), regionLength(SMALL));
    res.release();
    await f.pm.whenCapacity(0, 0, 0);
    assert.equal(f.pm.poolCount, 0);

    f.pm.addDomain(1);
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 1, 1)),
      'EINVAL',
    );
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 9)),
      'ESRCH',
    );
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 9, 1)),
      'ESRCH',
    );
    // 4 KiB + 2 x 512 KiB > 1 MiB: never fits, so not EAGAIN.
    assert.equal(
      errnoOf(() => f.pm.create(geo(19), 0, 1)),
      'EINVAL',
    );
    assert.throws(() => {
      f.pm.addDomain(0);
    }, /not a guest/);
    f.close();
  } finally {
    f.dispose();
  }
});

test('no fd or mapping survives many vchans, pools, guests and their removal', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8, lowWater: 0.25 });
  try {
    for (const d of [1, 2, 3]) f.pm.addDomain(d);
    for (const a of [...f.announced]) await f.join(a);
    const held: VchanResources[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 20; i++) {
        const [s, c] = [
          [0, 1],
          [2, 0],
          [0, 3],
          [1, 2],
          [3, 2],
        ][i % 5]!;
        try {
          held.push(f.pm.create(geo(10 + (i % 4), 10 + (round % 3)), s!, c!));
        } catch {
          // EAGAIN: attach whatever was announced meanwhile and go on.
          for (const a of f.announced.slice()) {
            if (
              !f.pm
                .pools()
                .find((p) => p.pool === a.pool)
                ?.joined.includes(a.domain)
            )
              await f.join(a);
          }
        }
      }
      for (const r of held.splice(0, held.length / 2)) r.release();
    }
    assert.ok(f.pm.poolCount > 3);
    f.pm.removeDomain(2);
    for (const r of held) r.release();
    f.close();
  } finally {
    f.dispose();
  }
});

test('host pools are per host uid: another uid’s vchans to the same guest go to a pool of their own', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8 });
  try {
    const me = process.geteuid?.() ?? 0;
    const other = me === 4242 ? 4343 : 4242;
    f.pm.addDomain(5);
    await f.join(f.of(5)[0]!);
    const mine = f.pm.create(SMALL, 0, 5, me);
    assert.equal(poolOf(mine), 1);
    // The first vchan of another uid: a new pool is created and announced; it waits for the guest.
    assert.equal(
      errnoOf(() => f.pm.create(SMALL, 0, 5, other)),
      'EAGAIN',
    );
    const announced = f.of(5);
    assert.equal(announced.length, 2);
    const ready = f.pm.whenCapacity(0, 5, 3000, other);
    await f.join(announced[1]!);
    await ready;
    const theirs = f.pm.create(SMALL, 5, 0, other);
    assert.equal(poolOf(theirs), 2);
    const shmOf = (r: typeof mine): number => fs.fstatSync(r.server.kind === 'fds' ? r.server.shm : (r.client as { shm: number }).shm).ino;
    assert.notEqual(shmOf(theirs), shmOf(mine), 'two uids share a pool memfd');
    // Without a uid: the daemon's own pool.
    const dflt = f.pm.create(SMALL, 0, 5);
    assert.equal(poolOf(dflt), 1);
    assert.deepEqual(
      f.pm.pools().map((p) => [p.pool, p.hostUid]),
      [
        [1, me],
        [2, other],
      ],
    );
    for (const r of [mine, theirs, dflt]) r.release();
    f.close();
  } finally {
    f.dispose();
  }
});
