// Shared-memory regions with a guest on either side (docs/shmem.md §6), over simulated guests
// running the real guest daemon: host→guest, guest→host and guest↔guest, in several orders, with
// bytes written on one side read on the other, through the library's mapping and through mmap
// parameters (fd + offset mapped by hand); another guest refused like a missing id; a creator
// killed while the other side maps; the pool extent's pages back (hole punched) once freed.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Shmem, Vchan, type ShmRegion } from '../../src/client/index.js';
import { native } from '../../src/native.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { SHMEM_PEER_MAIN } from '../helpers/shmem-peer.js';
import { expectFdsBackTo, fdTargets, settledFds, teardown, waitFor, type TestDaemon } from '../helpers/daemon-fixture.js';
import { cliStatus, startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';

const SEED = seedFromEnv(0x5e6);
const PAGE = 4096;

let host: TestDaemon;
let g1: TestGuest;
let g2: TestGuest;
let g3: TestGuest;
const open: Shmem[] = [];
const peers: PeerProcess[] = [];

before(async () => {
  // Guests 1 and 2 may talk (a pair pool); guest 3 is the outsider.
  host = await startHost({ guests: 3, guestPairs: [[1, 2]], config: { pools: { poolSize: 64 * 1024 * 1024 } } });
  g1 = await startGuest(host, 1);
  g2 = await startGuest(host, 2);
  g3 = await startGuest(host, 3);
});

after(() =>
  teardown(
    ...open.map((s) => () => s.close()),
    ...peers.map((p) => () => p.end()),
    () => g3?.stop(),
    () => g2?.stop(),
    () => g1?.stop(),
    () => host?.stop(),
  ),
);

async function shmem(runtimeDir: string): Promise<Shmem> {
  const s = await Shmem.open({ runtimeDir });
  open.push(s);
  return s;
}

async function peer(runtimeDir: string): Promise<PeerProcess> {
  const p = await PeerProcess.spawn(runtimeDir, { main: SHMEM_PEER_MAIN });
  peers.push(p);
  return p;
}

const sha = (b: ArrayBuffer | Uint8Array): string =>
  createHash('sha256')
    .update(b instanceof Uint8Array ? b : new Uint8Array(b))
    .digest('hex');

function fill(r: ShmRegion, seed: number): string {
  const bytes = new Prng(seed).bytes(r.buffer.byteLength);
  new Uint8Array(r.buffer).set(bytes);
  return sha(bytes);
}

const hostPid = (): number => host.daemon.child.pid!;

/** The host daemon's pool memfds: `/proc/<pid>/fd/<n>` of each, by pool id. */
function poolFds(): Map<number, string> {
  const out = new Map<number, string>();
  for (const [fd, target] of fdTargets(hostPid())) {
    const m = /kvmchan-pool-(\d+)/.exec(target);
    if (m !== null && !out.has(Number(m[1]))) out.set(Number(m[1]), `/proc/${hostPid()}/fd/${fd}`);
  }
  return out;
}

/** Bytes of memory the pool's memfd holds (st_blocks: punched holes give them back). */
function poolBytes(pool: number): number {
  const p = poolFds().get(pool);
  assert.ok(p !== undefined, `pool ${pool} has a memfd in the host daemon`);
  return fs.statSync(p).blocks * 512;
}

/** Free bytes of a pool as the host lists it (LIST_POOLS through the real CLI). */
async function poolFree(pool: number): Promise<number> {
  const p = (await cliStatus(host.runtimeDir)).pools.find((x) => x.pool === pool);
  assert.ok(p !== undefined, `pool ${pool} is listed`);
  return p.freeBytes;
}

/** The pool a region lives in, from the host's view: the pool whose members are the two domains. */
async function poolOf(a: number, b: number): Promise<number[]> {
  const want = [a, b].filter((d) => d !== 0).sort();
  return (await cliStatus(host.runtimeDir)).pools
    .filter((p) => JSON.stringify([p.memberA, p.memberB].filter((d) => d !== 0).sort()) === JSON.stringify(want))
    .map((p) => p.pool);
}

test('host → guest: the guest maps by id and by mmap parameters; bytes cross both ways', async () => {
  const h = await shmem(host.runtimeDir);
  const g = await shmem(g1.runtimeDir);
  const r = await h.share(1, 64);
  assert.deepEqual([r.ownerDomain, r.targetDomain, r.pages, r.buffer.byteLength], [0, 1, 64, 64 * PAGE]);
  const first = fill(r, SEED);
  const m = await g.map(0, r.id);
  assert.equal(sha(m.buffer), first, 'the guest reads what the host wrote');
  const back = fill(m, SEED + 1);
  assert.equal(sha(r.buffer), back, 'the host reads what the guest wrote');
  // A native consumer in the guest: fd + offset + length, its own mmap().
  const p = await g.mmapParams(0, r.id);
  assert.equal(p.offset % PAGE, 0);
  assert.equal(p.length, 64 * PAGE);
  const own = native.mmap(p.fd, p.length, p.offset, true);
  native.close(p.fd);
  assert.equal(sha(own), back);
  new Uint8Array(own).fill(0x5a, 0, PAGE);
  assert.equal(new Uint8Array(r.buffer)[PAGE - 1], 0x5a);
  native.munmap(own);
  await g.unmap({ domain: 0, id: r.id });
  await g.unmap(m);
  await h.release(r.id);
  await h.unmap(r);
  await assert.rejects(g.map(0, r.id), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
});

test('guest → host: released before the host maps is -ENOENT; mapped before, it stays valid', async () => {
  const g = await shmem(g1.runtimeDir);
  const h = await shmem(host.runtimeDir);
  const a = await g.share(0, 16);
  const b = await g.share(0, 16);
  assert.deepEqual([a.ownerDomain, a.targetDomain], [1, 0]);
  const fa = fill(a, SEED + 2);
  const mb = await h.map(1, b.id);
  await g.release(a.id);
  await g.release(b.id);
  await assert.rejects(h.map(1, a.id), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
  // Released with a live mapping: both sides keep the same pages.
  const fb = fill(b, SEED + 3);
  assert.equal(sha(mb.buffer), fb);
  fill(mb, SEED + 4);
  assert.equal(sha(b.buffer), sha(mb.buffer));
  assert.notEqual(fa, fb);
  // mmap parameters on the host: the pool memfd at the extent's offset.
  const c = await g.share(0, 4);
  const fc = fill(c, SEED + 5);
  const p = await h.mmapParams(1, c.id);
  const own = native.mmap(p.fd, p.length, p.offset, true);
  native.close(p.fd);
  assert.equal(sha(own), fc);
  native.munmap(own);
  await h.unmap({ domain: 1, id: c.id });
  await h.unmap(mb);
  for (const r of [a, b, c]) await g.unmap(r);
  await g.release(c.id);
});

test('guest ↔ guest: a pair pool carries the region; the third guest and the host get -ENOENT', async () => {
  const s1 = await shmem(g1.runtimeDir);
  const s2 = await shmem(g2.runtimeDir);
  const s3 = await shmem(g3.runtimeDir);
  const h = await shmem(host.runtimeDir);
  const r = await s1.share(2, 8);
  const f = fill(r, SEED + 6);
  const m = await s2.map(1, r.id);
  assert.equal(sha(m.buffer), f);
  assert.equal(sha(r.buffer), sha(m.buffer));
  fill(m, SEED + 7);
  assert.equal(sha(r.buffer), sha(m.buffer));
  // Not the target: the same answer as an id nobody ever had.
  const unknown = r.id === 0xffffffff ? 1 : r.id + 1;
  for (const [who, s] of [
    ['guest 3', s3],
    ['the host', h],
  ] as const) {
    for (const id of [r.id, unknown]) {
      await assert.rejects(s.map(1, id), { code: 'KVMCHAN_E_DAEMON_ENOENT' }, `${who} maps 1:${id}`);
      await assert.rejects(s.mmapParams(1, id), { code: 'KVMCHAN_E_DAEMON_ENOENT' }, `${who} params 1:${id}`);
    }
  }
  // Guest 3 is not allowed to share with guest 1 (no configured pair): policy, -EPERM.
  await assert.rejects(s3.share(1, 1), { code: 'KVMCHAN_E_DAEMON_EPERM' });
  // A guest shares with another domain, not its own.
  await assert.rejects(s1.share(1, 1), { code: 'KVMCHAN_E_DAEMON_EINVAL' });
  // The target cannot release it.
  await assert.rejects(s2.release(r.id), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
  await s2.unmap(m);
  await s1.unmap(r);
  await s1.release(r.id);
  assert.deepEqual(await poolOf(1, 2), [(await poolOf(1, 2))[0]], 'one pair pool');
});

test('freed extents come back: pool free bytes and the memfd’s pages (hole punched)', async () => {
  const g = await shmem(g1.runtimeDir);
  const h = await shmem(host.runtimeDir);
  const [pool] = await poolOf(1, 0);
  assert.ok(pool !== undefined);
  // The extent goes back only when the host's region is freed, whatever pool it is in.
  const pools = poolFds();
  const before = new Map([...pools.keys()].map((p) => [p, poolBytes(p)]));
  const r = await g.share(0, 2048); // 8 MiB
  fill(r, SEED + 8);
  const m = await h.map(1, r.id);
  const grown = [...poolFds().keys()].filter((p) => poolBytes(p) >= (before.get(p) ?? 0) + 2048 * PAGE);
  assert.equal(grown.length, 1, 'one pool holds the 8 MiB written');
  const inPool = grown[0]!;
  const free = await poolFree(inPool);
  await g.release(r.id);
  await g.unmap(r);
  assert.ok(poolBytes(inPool) >= (before.get(inPool) ?? 0) + 2048 * PAGE, 'a holder is left: nothing freed');
  await h.unmap(m);
  await waitFor(() => poolBytes(inPool) <= (before.get(inPool) ?? 0), 5000, 'the extent’s pages are punched out');
  assert.equal(await poolFree(inPool), free + 2048 * PAGE);
});

test('the creator guest’s daemon is killed while the host maps: the host keeps its pages, then all comes back', async () => {
  const creator = await peer(g3.runtimeDir);
  const h = await peer(host.runtimeDir);
  const shared = await creator.ok({ op: 'share', domain: 0, pages: 256 });
  const region = shared['region'] as number;
  const frame = (await creator.ok({ op: 'fill', region, seed: SEED + 9 }))['sha256'];
  await h.ok({ op: 'map', domain: 3, region });
  const freeNow = async (): Promise<number> => {
    let n = 0;
    for (const p of await poolOf(3, 0)) n += await poolFree(p);
    return n;
  };
  const free = await freeNow();
  await g3.kill();
  // The host still reads the creator's bytes: nothing is revoked.
  assert.equal((await h.ok({ op: 'hash', region }))['sha256'], frame);
  await g3.stop(); // its daemon is dead already: this removes its directory
  g3 = await startGuest(host, 3);
  // The session ended: the region was released implicitly, nobody new maps it.
  const other = await shmem(host.runtimeDir);
  await assert.rejects(other.map(3, region), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
  assert.equal(await freeNow(), free, 'the host still holds it');
  await h.kill();
  const deadline = Date.now() + 10000;
  while ((await freeNow()) !== free + 256 * PAGE) {
    assert.ok(Date.now() < deadline, 'the extent came back after the host side died');
    await new Promise((r) => setTimeout(r, 50));
  }
});

test('a host creator is killed while a guest maps: the guest keeps its pages until it unmaps', async () => {
  const creator = await peer(host.runtimeDir);
  const g = await shmem(g2.runtimeDir);
  const shared = await creator.ok({ op: 'share', domain: 2, pages: 32 });
  const region = shared['region'] as number;
  const frame = (await creator.ok({ op: 'fill', region, seed: SEED + 10 }))['sha256'];
  const m = await g.map(0, region);
  const pools = await poolOf(2, 0);
  const frees = await Promise.all(pools.map((p) => poolFree(p)));
  await creator.kill();
  assert.equal(sha(m.buffer), frame);
  await assert.rejects(g.map(0, region), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
  await g.unmap(m);
  const after = await Promise.all(pools.map((p) => poolFree(p)));
  assert.equal(
    after.reduce((a, b) => a + b, 0),
    frees.reduce((a, b) => a + b, 0) + 32 * PAGE,
    'the extent is back once the guest unmapped',
  );
});

/** A GUI agent in guest 1 and a GUI daemon on the host, over one vchan and one region. */
async function guiSession(frames: number, seed: number): Promise<void> {
  const WIDTH = 3840;
  const HEIGHT = 2160;
  const RECTS = 4;
  const MSG = 8 + RECTS * 16 + 32;
  const server = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 1, port: 5900 });
  const agent = await Vchan.connect({ runtimeDir: g1.runtimeDir, domain: 0, port: 5900, timeout: 10_000 });
  await server.waitConnected({ timeout: 10_000 });
  const gs = await Shmem.open({ runtimeDir: g1.runtimeDir });
  const hs = await Shmem.open({ runtimeDir: host.runtimeDir });
  try {
    const fb = await gs.share(0, (WIDTH * HEIGHT * 4) / PAGE);
    assert.equal(fb.pages, 8100);
    const id = Buffer.alloc(4);
    id.writeUInt32LE(fb.id);
    await agent.send(id);
    // The host maps the buffer once, by the id it got over the vchan.
    const got = await server.recv(4);
    const view = await hs.map(1, got!.readUInt32LE(0));
    const pixels = new Uint32Array(fb.buffer);
    const rng = new Prng(seed);
    for (let frame = 1; frame <= frames; frame++) {
      const msg = Buffer.alloc(MSG);
      msg.writeUInt32LE(frame, 0);
      msg.writeUInt32LE(RECTS, 4);
      for (let i = 0; i < RECTS; i++) {
        const w = rng.int(1, 512);
        const h = rng.int(1, 512);
        const x = rng.below(WIDTH - w);
        const y = rng.below(HEIGHT - h);
        const colour = rng.next();
        for (let row = y; row < y + h; row++) pixels.fill(colour, row * WIDTH + x, row * WIDTH + x + w);
        for (const [k, v] of [x, y, w, h].entries()) msg.writeUInt32LE(v, 8 + i * 16 + k * 4);
      }
      createHash('sha256')
        .update(new Uint8Array(fb.buffer))
        .digest()
        .copy(msg, 8 + RECTS * 16);
      await agent.send(msg);
      const damage = await server.recv(MSG);
      assert.ok(damage !== null);
      assert.equal(damage.readUInt32LE(0), frame);
      assert.equal(sha(view.buffer), damage.subarray(8 + RECTS * 16).toString('hex'), `frame ${frame} as the host sees it`);
      // The damaged rectangles hold what the guest drew there.
      for (let i = 0; i < RECTS; i++) {
        const x: number = damage.readUInt32LE(8 + i * 16);
        const y: number = damage.readUInt32LE(12 + i * 16);
        assert.equal(new Uint32Array(view.buffer)[y * WIDTH + x], pixels[y * WIDTH + x]);
      }
      await server.send(Buffer.from([1]));
      assert.ok((await agent.recv(1)) !== null, 'the host acknowledged the frame');
    }
    await hs.unmap(view);
    await gs.release(fb.id);
  } finally {
    gs.close();
    hs.close();
    agent.close();
    server.close();
  }
}

test('GUI-shaped: a guest shares a 3840×2160×4 buffer, sends its id over a vchan, draws frames with damage; the host checks each', async () => {
  // A first session may grow pools (kept for later use); a second one leaves nothing behind.
  await guiSession(1, SEED + 11);
  const hostFds = await settledFds(hostPid());
  const guestFds = await settledFds(g1.daemon.child.pid!);
  await guiSession(6, SEED + 12);
  await expectFdsBackTo(hostPid(), hostFds, 5000, 'host daemon fds');
  await expectFdsBackTo(g1.daemon.child.pid!, guestFds, 5000, 'guest daemon fds');
});
