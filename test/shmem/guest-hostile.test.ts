// A hostile guest against shared-memory regions (docs/shmem.md §2, §4, §6; docs/security.md):
// domain 3 is test/helpers/hostile-guest.ts on its real devices, speaking GUEST_SHM_* itself. It
// names regions of other domains (shared between guests 1 and 2, and by the host with guest 1),
// releases and unmaps them under any conn, asks for absurd page counts and floods shares under
// fresh conns. Every attempt is refused — a region it may not map answers exactly like one that
// never existed — its regions stay within its quota, and the honest guests' region keeps its
// bytes and stays mappable. When its session ends, what it created goes back to the pool.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Shmem } from '../../src/client/index.js';
import { Errno } from '../../src/protocol/constants.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { HOSTILE_GUEST_MAIN } from '../helpers/hostile-guest.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { teardown, type TestDaemon } from '../helpers/daemon-fixture.js';
import { cliStatus, deviceDir, startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';

const SEED = seedFromEnv(0x5bad);
const HOSTILE = 3;
const REGIONS_PER_GUEST = 8;

let host: TestDaemon;
let g1: TestGuest;
let g2: TestGuest;
let hostile: PeerProcess;
const open: Shmem[] = [];

before(async () => {
  host = await startHost({
    guests: 3,
    guestPairs: [[1, 2]],
    config: { limits: { maxShmRegionsPerUid: REGIONS_PER_GUEST, maxShmBytesPerUid: 64 * 1024 * 1024 } },
  });
  g1 = await startGuest(host, 1);
  g2 = await startGuest(host, 2);
  hostile = await PeerProcess.spawn(deviceDir(host, HOSTILE), { main: HOSTILE_GUEST_MAIN });
  await hostile.ok({ op: 'attach' });
  assert.equal((await hostile.ok({ op: 'hello' }))['err'], 0);
  await hostile.ok({ op: 'waitPools', count: 1 });
});

after(() =>
  teardown(
    ...open.map((s) => () => s.close()),
    () => hostile?.end(),
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

const shm = async (cmd: Record<string, unknown>): Promise<number> => (await hostile.ok({ op: 'shm', ...cmd }))['err'] as number;

test('other domains’ regions: map, unmap and release under any conn are refused like a missing id', async () => {
  const s1 = await shmem(g1.runtimeDir);
  const s2 = await shmem(g2.runtimeDir);
  const h = await shmem(host.runtimeDir);
  const pair = await s1.share(2, 4);
  const fromHost = await h.share(1, 4);
  const bytes = new Prng(SEED).bytes(4 * 4096);
  new Uint8Array(pair.buffer).set(bytes);
  const targets = [
    { domain: 1, region: pair.id },
    { domain: 0, region: fromHost.id },
  ];
  for (const t of targets) {
    const unknown = t.region === 0xffffffff ? 1 : t.region + 1;
    for (const conn of [0, 1, 2, 0xffffffff]) {
      for (const region of [t.region, unknown]) {
        assert.equal(await shm({ cmd: 'map', conn, ...t, region }), -Errno.ENOENT, `map ${t.domain}:${region} conn ${conn}`);
        assert.equal(await shm({ cmd: 'unmap', conn, ...t, region }), -Errno.ENOENT, `unmap ${t.domain}:${region} conn ${conn}`);
        // Release names no owner: it is always one of the hostile guest's own ids.
        assert.equal(await shm({ cmd: 'release', conn, region }), -Errno.ENOENT, `release ${region} conn ${conn}`);
      }
    }
  }
  // The honest target still maps the pair's region, with the creator's bytes.
  const m = await s2.map(1, pair.id);
  assert.ok(Buffer.from(m.buffer).equals(bytes), 'the target reads the creator’s bytes');
  const g = await shmem(g1.runtimeDir);
  await g.unmap(await g.map(0, fromHost.id));
  await s2.unmap(m);
  await s1.release(pair.id);
  await h.release(fromHost.id);
});

test('absurd sizes are refused; a flood under fresh conns stays within the guest’s region quota', async () => {
  assert.equal(await shm({ cmd: 'share', conn: 1, domain: 0, pages: 0 }), -Errno.EINVAL);
  for (const pages of [262_145, 0xffffffff]) assert.equal(await shm({ cmd: 'share', conn: 1, domain: 0, pages }), -Errno.EMSGSIZE);
  // 1 GiB is a valid region size, but not in a 64 MiB pool.
  assert.equal(await shm({ cmd: 'share', conn: 1, domain: 0, pages: 262_144 }), -Errno.EMSGSIZE);
  // Toward a domain that does not exist, and toward guest 1 (no configured pair).
  assert.equal(await shm({ cmd: 'share', conn: 1, domain: 77, pages: 1 }), -Errno.ESRCH);
  assert.equal(await shm({ cmd: 'share', conn: 1, domain: 1, pages: 1 }), -Errno.EPERM);
  const flood = (await hostile.ok({ op: 'shmSpray', count: 200, firstConn: 1000, domain: 0, pages: 16 }))['results'] as Record<
    string,
    number
  >;
  assert.deepEqual(flood, { '0': REGIONS_PER_GUEST, [String(-Errno.EDQUOT)]: 200 - REGIONS_PER_GUEST });
  // The honest guests' quotas are their own: guest 1 still shares.
  const s1 = await shmem(g1.runtimeDir);
  const r = await s1.share(0, 1);
  await s1.release(r.id);
  await s1.unmap(r);
});

test('when the hostile session ends, every region it created is freed', async () => {
  const regionPool = async (): Promise<{ freeBytes: number; size: number } | undefined> =>
    (await cliStatus(host.runtimeDir)).pools.filter((p) => p.memberA === HOSTILE && p.memberB === 0 && p.freeBytes < p.size - 4096)[0];
  assert.ok((await regionPool()) !== undefined, 'the flood left regions in a pool of the hostile guest');
  await hostile.ok({ op: 'detach' });
  const deadline = Date.now() + 10_000;
  while ((await regionPool()) !== undefined) {
    assert.ok(Date.now() < deadline, 'the hostile guest’s regions were freed with its session');
    await new Promise((r) => setTimeout(r, 50));
  }
  // The daemon still serves regions.
  const s1 = await shmem(g1.runtimeDir);
  const s2 = await shmem(g2.runtimeDir);
  const r = await s1.share(2, 2);
  await s2.unmap(await s2.map(1, r.id));
  await s1.release(r.id);
});
