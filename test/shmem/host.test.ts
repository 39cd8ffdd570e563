// Shared-memory regions between host processes (docs/shmem.md), against a real kvmchand: one id
// for a 4K framebuffer, mapped by id and through mmap parameters; another uid cannot map it (a
// real attacker as uid 65534); release semantics; memory and fds back after both sides die.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Shmem, Vchan } from '../../src/client/index.js';
import { native as nativeAddon } from '../../src/native.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { InvalidArgumentError } from '../../src/errors.js';
import { socketPath } from '../../src/paths.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { SHMEM_PEER_MAIN } from '../helpers/shmem-peer.js';
import { expectFdsBackTo, fdTargets, settledFds, startDaemon, teardown, waitFor, type TestDaemon } from '../helpers/daemon-fixture.js';

const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;
const needsRoot = !asRoot ? 'needs root (the attacker runs as another uid)' : false;
/** 3840 × 2160 × 4 bytes. */
const FRAMEBUFFER_PAGES = 8100;
const MiB = 1024 * 1024;

let d: TestDaemon;
const peers: PeerProcess[] = [];

before(async () => {
  d = await startDaemon({ config: { limits: { maxShmBytesPerUid: 1 << 20, maxShmRegionsPerUid: 3 } } });
  // Other uids may reach the socket (as members of the kvmchan group would).
  fs.chmodSync(d.runtimeDir, 0o755);
  fs.chmodSync(socketPath(d.runtimeDir), 0o666);
});

after(() => teardown(...peers.map((p) => () => p.end()), () => d?.stop()));

async function peer(uid?: number): Promise<PeerProcess> {
  const p = await PeerProcess.spawn(d.runtimeDir, { main: SHMEM_PEER_MAIN, ...(uid === undefined ? {} : { uid, gid: uid }) });
  peers.push(p);
  return p;
}

const daemonPid = (): number => d.daemon.child.pid!;
/** The daemon's region memfds (memfd_create name "kvmchan-shm"). */
const regionFds = (): number => [...fdTargets(daemonPid()).values()].filter((t) => t.includes('kvmchan-shm')).length;
/** System-wide shared memory (memfds included), in bytes. */
const shmemBytes = (): number => Number(/^Shmem:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))![1]) * 1024;

test('a 4K framebuffer is one id: the target maps it by id and by mmap parameters, data crosses both ways', async () => {
  const creator = await peer();
  const target = await peer();
  const native = await peer();
  const shared = await creator.ok({ op: 'share', domain: 0, pages: FRAMEBUFFER_PAGES });
  const region = shared['region'] as number;
  assert.ok(region > 0 && region <= 0xffffffff);
  assert.equal(shared['ownerDomain'], 0);
  const frame1 = (await creator.ok({ op: 'fill', region, seed: 1 }))['sha256'];
  assert.equal((await target.ok({ op: 'map', domain: 0, region }))['pages'], FRAMEBUFFER_PAGES);
  assert.equal((await target.ok({ op: 'hash', region }))['sha256'], frame1);
  // A consumer that must call mmap() itself: fd, offset, length.
  const params = await native.ok({ op: 'params', domain: 0, region });
  assert.deepEqual([params['offset'], params['length']], [0, FRAMEBUFFER_PAGES * 4096]);
  assert.equal((await native.ok({ op: 'hash', region }))['sha256'], frame1);
  const frame2 = (await native.ok({ op: 'fill', region, seed: 2 }))['sha256'];
  assert.notEqual(frame2, frame1);
  assert.equal((await creator.ok({ op: 'hash', region }))['sha256'], frame2);
  assert.equal((await target.ok({ op: 'hash', region }))['sha256'], frame2);
  for (const p of [native, target, creator]) await p.ok({ op: 'unmap', region });
  await creator.ok({ op: 'release', region });
  await waitFor(() => regionFds() === 0, 5000, 'the region is freed');
});

test('another uid cannot map a region: -ENOENT exactly as for an id that does not exist', { skip: needsRoot }, async () => {
  const creator = await peer();
  const attacker = await peer(NOBODY);
  const region = (await creator.ok({ op: 'share', domain: 0, pages: 4 }))['region'] as number;
  await creator.ok({ op: 'fill', region, seed: 7 });
  const unknown = region === 0xffffffff ? 1 : region + 1;
  const answers = [];
  for (const r of [region, unknown]) {
    for (const op of ['map', 'params']) {
      const a = await attacker.call({ op, domain: 0, region: r });
      assert.equal(a.ok, false, `${op} of region ${r} by uid ${NOBODY} must fail`);
      answers.push({ code: a.error?.code, errno: a.error?.errno });
    }
  }
  // The same answer whether the region exists or not: nothing leaks.
  for (const a of answers) assert.deepEqual(a, { code: 'KVMCHAN_E_DAEMON_ENOENT', errno: -2 });
  // Nor can it release it, or report an unmap to drop the creator's hold.
  const rel = await attacker.call({ op: 'release', region });
  assert.equal(rel.error?.code, 'KVMCHAN_E_DAEMON_ENOENT');
  // Its own region is its own: root's processes (another uid) get ENOENT too.
  const own = (await attacker.ok({ op: 'share', domain: 0, pages: 1 }))['region'] as number;
  const byRoot = await creator.call({ op: 'map', domain: 0, region: own });
  assert.equal(byRoot.error?.code, 'KVMCHAN_E_DAEMON_ENOENT');
  await attacker.ok({ op: 'release', region: own });
  await creator.ok({ op: 'release', region });
  await creator.ok({ op: 'unmap', region });
  await attacker.ok({ op: 'unmap', region: own });
  await waitFor(() => regionFds() === 0, 5000, 'both regions are freed');
});

test('release: nobody new maps, existing mappings stay valid, memory goes with the last mapping', async () => {
  const creator = await peer();
  const target = await peer();
  const late = await peer();
  const region = (await creator.ok({ op: 'share', domain: 0, pages: 16 }))['region'] as number;
  await target.ok({ op: 'map', domain: 0, region });
  await creator.ok({ op: 'release', region });
  const refused = await late.call({ op: 'map', domain: 0, region });
  assert.equal(refused.error?.code, 'KVMCHAN_E_DAEMON_ENOENT');
  // Both old mappings still work and still share the same pages.
  const sum = (await target.ok({ op: 'fill', region, seed: 3 }))['sha256'];
  assert.equal((await creator.ok({ op: 'hash', region }))['sha256'], sum);
  assert.equal((await creator.call({ op: 'release', region })).error?.code, 'KVMCHAN_E_DAEMON_ENOENT', 'released once');
  assert.equal(regionFds(), 1, 'held while mapped');
  await creator.ok({ op: 'unmap', region });
  assert.equal((await target.ok({ op: 'hash', region }))['sha256'], sum, "the creator's unmap does not touch the target's pages");
  assert.equal(regionFds(), 1);
  await target.ok({ op: 'unmap', region });
  await waitFor(() => regionFds() === 0, 5000, 'the region is freed with its last mapping');
});

test('creator and target SIGKILLed: the region is freed, the daemon fds and the memory come back', async (t) => {
  const baseline = await settledFds(daemonPid());
  const shmem0 = shmemBytes();
  const creator = await peer();
  const target = await peer();
  const region = (await creator.ok({ op: 'share', domain: 0, pages: FRAMEBUFFER_PAGES }))['region'] as number;
  await target.ok({ op: 'map', domain: 0, region });
  // Touch every page: the region's 31.6 MiB are committed now.
  await target.ok({ op: 'fill', region, seed: 4 });
  const full = shmemBytes();
  t.diagnostic(`Shmem: ${(shmem0 / MiB).toFixed(1)} MiB before, ${(full / MiB).toFixed(1)} MiB with the region written`);
  await creator.kill('SIGKILL');
  await target.kill('SIGKILL');
  await expectFdsBackTo(daemonPid(), baseline, 5000, 'daemon fds after both sides died');
  assert.equal(regionFds(), 0);
  // The memfd is gone with its last reference: its pages leave Shmem (others' use may move it a
  // little, so ask for three quarters of the region back).
  const region_ = FRAMEBUFFER_PAGES * 4096;
  await waitFor(() => full - shmemBytes() >= 0.75 * region_, 5000, 'Shmem falls back');
  t.diagnostic(`Shmem after both SIGKILLed: ${(shmemBytes() / MiB).toFixed(1)} MiB`);
});

test('quotas: regions count in maxShmBytesPerUid and maxShmRegionsPerUid; root is exempt', { skip: needsRoot }, async () => {
  const user = await peer(NOBODY);
  // 1 MiB of shared memory for this uid: 257 pages are over it.
  const big = await user.call({ op: 'share', domain: 0, pages: 257 });
  assert.equal(big.error?.code, 'KVMCHAN_E_DAEMON_EDQUOT', JSON.stringify(big.error));
  const ids: number[] = [];
  for (let i = 0; i < 3; i++) ids.push((await user.ok({ op: 'share', domain: 0, pages: 1 }))['region'] as number);
  const fourth = await user.call({ op: 'share', domain: 0, pages: 1 });
  assert.equal(fourth.error?.code, 'KVMCHAN_E_DAEMON_EDQUOT');
  // A released region still counts while it is mapped, and not after.
  await user.ok({ op: 'release', region: ids[0] });
  assert.equal((await user.call({ op: 'share', domain: 0, pages: 1 })).error?.code, 'KVMCHAN_E_DAEMON_EDQUOT');
  await user.ok({ op: 'unmap', region: ids[0] });
  ids[0] = (await user.ok({ op: 'share', domain: 0, pages: 1 }))['region'] as number;
  // root is not limited.
  const mine = await Shmem.open({ runtimeDir: d.runtimeDir });
  try {
    for (let i = 0; i < 5; i++) await mine.share(0, 512);
  } finally {
    mine.close();
  }
  await user.end();
  await waitFor(() => regionFds() === 0, 5000, 'everything freed');
});

test('arguments are checked before anything is sent; an unknown domain is ESRCH', async () => {
  const s = await Shmem.open({ runtimeDir: d.runtimeDir });
  try {
    await assert.rejects(s.share(0, 0), InvalidArgumentError);
    await assert.rejects(s.share(0, 262145), InvalidArgumentError);
    await assert.rejects(s.map(-1, 1), InvalidArgumentError);
    await assert.rejects(s.share(42, 1), { code: 'KVMCHAN_E_DAEMON_ESRCH' });
    await assert.rejects(s.map(0, 12345), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
    const r = await s.share(0, 2);
    new Uint8Array(r.buffer).fill(9);
    const again = await s.map(0, r.id);
    assert.equal(new Uint8Array(again.buffer)[8191], 9, 'the creator maps its own region');
    await s.unmap(again);
    assert.equal(again.buffer.byteLength, 0, 'unmapped: the buffer is detached');
  } finally {
    s.close();
  }
  await waitFor(() => regionFds() === 0, 5000, 'close released and unmapped everything');
});

test('1,000 regions shared and mapped at once; fds and mappings back after close', async () => {
  const selfFds = await settledFds('self');
  const daemonFds = await settledFds(daemonPid());
  const mappings0 = nativeAddon.mappingCount();
  const creator = await Shmem.open({ runtimeDir: d.runtimeDir });
  const mapper = await Shmem.open({ runtimeDir: d.runtimeDir });
  try {
    const shared = [];
    for (let i = 0; i < 1000; i++) {
      const r = await creator.share(0, 1);
      new Uint32Array(r.buffer)[0] = i;
      shared.push(r);
    }
    assert.equal(new Set(shared.map((r) => r.id)).size, 1000, 'one id each');
    assert.equal(regionFds(), 1000);
    for (const [i, r] of shared.entries()) {
      const m = await mapper.map(0, r.id);
      assert.equal(new Uint32Array(m.buffer)[0], i);
    }
    assert.equal(nativeAddon.mappingCount(), mappings0 + 2000);
  } finally {
    mapper.close();
    creator.close();
  }
  assert.equal(nativeAddon.mappingCount(), mappings0);
  await expectFdsBackTo('self', selfFds, 5000, 'our fds after close');
  await expectFdsBackTo(daemonPid(), daemonFds, 5000, 'the daemon fds after close');
});

test('GUI-shaped: a 3840×2160×4 frame shared once, its id sent over a vchan, damage rectangles verified frame by frame', async () => {
  const W = 3840;
  const H = 2160;
  const rng = new Prng(seedFromEnv(0x51a7));
  const agent = await Shmem.open({ runtimeDir: d.runtimeDir });
  const gui = await Shmem.open({ runtimeDir: d.runtimeDir });
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 6000 });
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 6000 });
  try {
    const fb = await agent.share(0, (W * H * 4) / 4096);
    const id = Buffer.alloc(4);
    id.writeUInt32LE(fb.id);
    await server.send(id);
    // The GUI side maps the frame once, by the id it received.
    const got = await client.recv(4);
    const view = await gui.map(0, got!.readUInt32LE(0));
    const pixels = new Uint32Array(fb.buffer);
    const seen = new Uint32Array(view.buffer);
    for (let frame = 1; frame <= 20; frame++) {
      // Draw a damage rectangle, then tell the other side where (x, y, w, h) and its checksum.
      const w = rng.int(1, 512);
      const h = rng.int(1, 512);
      const x = rng.int(0, W - w);
      const y = rng.int(0, H - h);
      const colour = rng.next();
      for (let row = y; row < y + h; row++) pixels.fill(colour, row * W + x, row * W + x + w);
      const msg = Buffer.alloc(24);
      [frame, x, y, w, h, rectSum(pixels, W, x, y, w, h)].forEach((v, i) => msg.writeUInt32LE(v, i * 4));
      await server.send(msg);
      const m = (await client.recv(24))!;
      const [f, mx, my, mw, mh, sum] = [0, 1, 2, 3, 4, 5].map((i) => m.readUInt32LE(i * 4));
      assert.equal(f, frame);
      assert.equal(rectSum(seen, W, mx!, my!, mw!, mh!), sum, `frame ${frame}: the damaged rectangle reads the same on the GUI side`);
    }
  } finally {
    client.close();
    server.close();
    gui.close();
    agent.close();
  }
  await waitFor(() => regionFds() === 0, 5000, 'the frame is freed');
});

/** A checksum (FNV-1a over the pixels) of a rectangle of a W-wide frame. */
function rectSum(p: Uint32Array, W: number, x: number, y: number, w: number, h: number): number {
  let s = 0x811c9dc5;
  for (let row = y; row < y + h; row++) {
    for (let i = row * W + x; i < row * W + x + w; i++) s = Math.imul(s ^ p[i]!, 0x01000193) >>> 0;
  }
  return s;
}

test('the target dies while mapping: the creator is unaffected, the region stays shareable; the creator dies: the target keeps its pages', async () => {
  const creator = await peer();
  const target = await peer();
  const region = (await creator.ok({ op: 'share', domain: 0, pages: 32 }))['region'] as number;
  await target.ok({ op: 'map', domain: 0, region });
  const sum = (await target.ok({ op: 'fill', region, seed: 5 }))['sha256'];
  await target.kill('SIGKILL');
  assert.equal((await creator.ok({ op: 'hash', region }))['sha256'], sum, 'what the dead target wrote is still there');
  // Not released: a new target maps it.
  const second = await peer();
  assert.equal((await second.ok({ op: 'hash', region: (await second.ok({ op: 'map', domain: 0, region }))['region'] }))['sha256'], sum);
  // Now the creator dies: an implicit release; the mapping of the living side stays valid.
  await creator.kill('SIGKILL');
  const late = await peer();
  assert.equal((await late.call({ op: 'map', domain: 0, region })).error?.code, 'KVMCHAN_E_DAEMON_ENOENT', 'released with its creator');
  const sum2 = (await second.ok({ op: 'fill', region, seed: 6 }))['sha256'];
  assert.equal((await second.ok({ op: 'hash', region }))['sha256'], sum2);
  assert.equal(regionFds(), 1, 'held by the survivor');
  await second.ok({ op: 'unmap', region });
  await waitFor(() => regionFds() === 0, 5000, 'freed with the last mapping');
});
