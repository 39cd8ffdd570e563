// Real rings over pool slots (docs/pools.md §3): the ring code of every endpoint sees only
// "a mapping, an eventfd to wait on, an eventfd to kick" — built from a host process's fds
// or from a guest's pool device — and data flows both ways at once on several vchans of the
// same pools without cross-talk. Spinning is off, so every wake-up is a real kick on vector v.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { native } from '../../src/native.js';
import { RingEndpoint, EOF } from '../../src/ring/endpoint.js';
import { AsyncRing } from '../../src/ring/async-ring.js';
import { EventFdWaiter } from '../../src/ring/eventfd-waiter.js';
import type { RingGeometry } from '../../src/ring/layout.js';
import type { VchanResources, EndpointAccess } from '../../src/daemon/registry/vchan-resources.js';
import type { SocketDevice } from '../../src/ivshmem/socket-device.js';
import { Prng } from '../helpers/prng.js';
import { fixture, pageRound } from './fixture.js';
import { waitFor } from '../helpers/wait.js';

interface Side {
  ring: AsyncRing;
  close(): void;
}

/** One endpoint as its process would build it from the grant (fds are dup'ed like SCM_RIGHTS). */
function side(res: VchanResources, role: 'server' | 'client', dev: SocketDevice | null): Side {
  const access: EndpointAccess = role === 'server' ? res.server : res.client;
  const len = pageRound(res.shmLength);
  let mapping: ArrayBuffer;
  let waiter: EventFdWaiter;
  let unmap: () => void;
  if (access.kind === 'fds') {
    assert.equal(dev, null);
    mapping = native.mmap(access.shm, len, res.shmOffset, true);
    waiter = new EventFdWaiter(native.dup(access.wait), native.dup(access.kick));
    unmap = () => {
      native.munmap(mapping);
    };
  } else {
    assert.ok(dev !== null);
    mapping = dev.map(res.shmOffset, len);
    const kick = dev.doorbellFd(access.peerId, access.peerVector);
    assert.ok(kick !== null, 'the guest knows the doorbell it must ring');
    waiter = new EventFdWaiter(native.dup(dev.interruptFd(access.vector)), native.dup(kick));
    unmap = () => {
      dev.unmap(mapping);
    };
  }
  const ep = new RingEndpoint(mapping, 0, { role, ...res.geometry }, waiter.kick);
  if (role === 'client') ep.attach();
  return {
    ring: new AsyncRing(ep, waiter, { spin: 0 }),
    close: () => {
      ep.close();
      waiter.close();
      unmap();
    },
  };
}

async function pump(from: AsyncRing, to: AsyncRing, total: number, seed: number): Promise<void> {
  const rng = new Prng(seed);
  const data = rng.bytes(total);
  const want = createHash('sha256').update(data).digest('hex');
  const writer = (async () => {
    for (let off = 0; off < total;) {
      const n = Math.min(total - off, rng.int(1, 9000));
      await from.write(data.subarray(off, off + n));
      off += n;
    }
  })();
  const h = createHash('sha256');
  const buf = new Uint8Array(5000);
  let got = 0;
  while (got < total) {
    const n = await to.read(buf.subarray(0, Math.min(buf.length, total - got)));
    assert.notEqual(n, EOF);
    h.update(buf.subarray(0, n));
    got += n;
  }
  await writer;
  assert.equal(h.digest('hex'), want);
}

test('rings run over pool slots: host↔guest both ways and guest↔guest, several at once', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8 });
  const sides: Side[] = [];
  const held: VchanResources[] = [];
  try {
    for (const d of [1, 2]) f.pm.addDomain(d);
    const g1 = await f.join(f.of(1)[0]!);
    await f.join(f.of(2)[0]!);
    const g: RingGeometry = { c2sOrder: 12, s2cOrder: 13 };
    // Host process serves guest 1; guest 1 serves a host process; guest 2 serves guest 1.
    const hostServes = f.pm.create(g, 0, 1);
    const guestServes = f.pm.create(g, 1, 0);
    assert.throws(() => f.pm.create(g, 2, 1), /being added/);
    const p1 = await f.join(f.of(1).at(-1)!);
    const p2 = await f.join(f.of(2).at(-1)!);
    await f.pm.whenCapacity(2, 1, 2000);
    await waitFor(() => p1.peers().includes(2), 2000, 'guest 1 to learn about guest 2');
    const pair = f.pm.create(g, 2, 1);
    held.push(hostServes, guestServes, pair);

    const pairs: [Side, Side][] = [
      [side(hostServes, 'server', null), side(hostServes, 'client', g1)],
      [side(guestServes, 'server', g1), side(guestServes, 'client', null)],
      [side(pair, 'server', p2), side(pair, 'client', p1)],
    ];
    for (const [s, c] of pairs) sides.push(s, c);
    const total = 300_000;
    await Promise.all(pairs.flatMap(([s, c], i) => [pump(s.ring, c.ring, total, 100 + i), pump(c.ring, s.ring, total, 200 + i)]));
    // Closing one side is seen by the other as end of stream after the data.
    const [s0, c0] = pairs[0]!;
    await s0.ring.write(new Uint8Array([1, 2, 3]));
    s0.close();
    sides.splice(sides.indexOf(s0), 1);
    const buf = new Uint8Array(10);
    assert.equal(await c0.ring.read(buf), 3);
    assert.equal(await c0.ring.read(buf), EOF);
    for (const s of sides.splice(0)) s.close();
    for (const r of held.splice(0)) r.release();
    f.close();
  } finally {
    for (const s of sides) s.close();
    for (const r of held) r.release();
    f.dispose();
  }
});
