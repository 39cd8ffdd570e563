// Shared-memory regions in `kvmchan status` and Shmem.list() (LIST_REGIONS, wire-protocol.md
// §6.11): a region a test process shares shows with its id, domains, size, holds and creator;
// release shows; the --json output validates against the documented schema (docs/cli.md
// "status --json"); and a process of another uid, really running as that uid, sees its own
// regions only — not root's, whose id it would otherwise learn.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { z } from 'zod';
import { socketPath } from '../../src/paths.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { SHMEM_PEER_MAIN } from '../helpers/shmem-peer.js';
import { Shmem } from '../../src/client/index.js';
import { expectFdsBackTo, settledFds, startDaemon, teardown, type TestDaemon } from '../helpers/daemon-fixture.js';

const NOBODY = 65534;
const CLI_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
const asRoot = process.getuid?.() === 0;

/** The "regions" part of docs/cli.md "status --json", strictly: no field more, none less. */
const RegionJson = z.strictObject({
  id: z.number().int().min(1).max(0xffffffff),
  ownerDomain: z.number().int().min(0),
  targetDomain: z.number().int().min(0),
  pages: z.number().int().min(1),
  sizeBytes: z.number().int().min(4096),
  released: z.boolean(),
  holds: z.number().int().min(0),
  creatorUid: z.number().int().min(0).nullable(),
  creatorPid: z.number().int().min(1).nullable(),
});
const StatusJson = z.object({
  version: z.literal(1),
  domains: z.array(z.object({ id: z.number() })),
  pools: z.array(z.unknown()),
  vchans: z.array(z.unknown()),
  regions: z.array(RegionJson),
});

interface Listed {
  id: number;
  ownerDomain: number;
  creatorUid: number | null;
}

let d: TestDaemon;
const ends: (() => unknown)[] = [];

before(async () => {
  d = await startDaemon();
  // Let another uid reach the socket (the default is 0660 for root and group kvmchan).
  fs.chmodSync(d.runtimeDir, 0o755);
  fs.chmodSync(socketPath(d.runtimeDir), 0o666);
});

after(() => teardown(...ends, () => d?.stop()));

async function shmemPeer(uid?: number): Promise<PeerProcess> {
  const p = await PeerProcess.spawn(d.runtimeDir, { main: SHMEM_PEER_MAIN, ...(uid === undefined ? {} : { uid, gid: uid }) });
  ends.push(() => p.end());
  return p;
}

async function status(...args: string[]): Promise<string> {
  const r = await promisify(execFile)(process.execPath, [CLI_MAIN, '--runtime-dir', d.runtimeDir, 'status', ...args], { timeout: 30000 });
  return r.stdout;
}

test('status shows a region with its fields, as a table and as schema-valid JSON; release shows', async () => {
  const owner = await shmemPeer();
  const mapper = await shmemPeer();
  const ownerPid = (await owner.ready).pid;
  const id = (await owner.ok({ op: 'share', domain: 0, pages: 3 }))['region'] as number;
  await mapper.ok({ op: 'map', domain: 0, region: id });

  const text = await status();
  assert.match(text, /Shared-memory regions \(1\)/);
  const row = text.split('\n').find((l) => l.trim().startsWith(`${id} `));
  assert.ok(row !== undefined, `no row for region ${id} in:\n${text}`);
  assert.deepEqual(row.trim().split(/\s+/), [String(id), '0', '0', '3', '12.0', 'KiB', 'shared', '2', `${process.getuid?.()}/${ownerPid}`]);

  const st = StatusJson.parse(JSON.parse(await status('--json')));
  assert.deepEqual(st.regions, [
    {
      id,
      ownerDomain: 0,
      targetDomain: 0,
      pages: 3,
      sizeBytes: 3 * 4096,
      released: false,
      holds: 2,
      creatorUid: process.getuid?.() ?? null,
      creatorPid: ownerPid,
    },
  ]);

  // Released with a mapper left: listed as released until the last mapping is given back.
  await owner.ok({ op: 'release', region: id });
  await owner.ok({ op: 'unmap', region: id });
  const released = StatusJson.parse(JSON.parse(await status('--json'))).regions;
  assert.deepEqual(
    released.map((r) => [r.id, r.released, r.holds]),
    [[id, true, 1]],
  );
  assert.match(await status(), new RegExp(`^${id} .*released\\s+1\\s`, 'm'));
  await mapper.ok({ op: 'unmap', region: id });
  const gone = await status();
  assert.doesNotMatch(gone, /Shared-memory regions/, 'freed: no longer listed');
  assert.deepEqual(StatusJson.parse(JSON.parse(await status('--json'))).regions, []);
});

test('another uid lists only its own regions; root lists all', { skip: asRoot ? false : 'needs root' }, async () => {
  const root = await shmemPeer();
  const nobody = await shmemPeer(NOBODY);
  assert.equal((await nobody.ready).uid, NOBODY, 'the peer really runs as uid 65534');
  const rootId = (await root.ok({ op: 'share', domain: 0, pages: 1 }))['region'] as number;
  const nobodyId = (await nobody.ok({ op: 'share', domain: 0, pages: 2 }))['region'] as number;

  const seenByNobody = (await nobody.ok({ op: 'list' }))['regions'] as Listed[];
  assert.deepEqual(
    seenByNobody.map((r) => [r.id, r.creatorUid]),
    [[nobodyId, NOBODY]],
    "uid 65534 sees its own region and not root's",
  );
  const seenByRoot = ((await root.ok({ op: 'list' }))['regions'] as Listed[]).map((r) => r.id).sort((a, b) => a - b);
  assert.deepEqual(
    seenByRoot,
    [rootId, nobodyId].sort((a, b) => a - b),
  );
  const cli = StatusJson.parse(JSON.parse(await status('--json')));
  assert.deepEqual(
    cli.regions.map((r) => r.id).sort((a, b) => a - b),
    seenByRoot,
    'status as root lists both',
  );
  await root.ok({ op: 'release', region: rootId });
  await nobody.ok({ op: 'release', region: nobodyId });
});

test('1,200 regions page through LIST_REGIONS (511 per reply): each listed once, ascending', async () => {
  const baseline = await settledFds(d.daemon.child.pid!);
  const shm = await Shmem.open({ runtimeDir: d.runtimeDir });
  ends.push(() => shm.close());
  const ids: number[] = [];
  for (let i = 0; i < 1200; i++) ids.push((await shm.share(0, 1)).id);
  // Root sees regions of the earlier tests' peers too (released, still held): ours among them.
  const mine = new Set(ids);
  const listed = (await shm.list()).map((r) => r.id);
  assert.deepEqual(
    listed,
    [...new Set(listed)].sort((a, b) => a - b),
    'unique and ascending',
  );
  assert.deepEqual(
    listed.filter((id) => mine.has(id)),
    [...ids].sort((a, b) => a - b),
  );
  const cli = StatusJson.parse(JSON.parse(await status('--json'))).regions.filter((r) => mine.has(r.id));
  assert.equal(cli.length, 1200);
  assert.equal(new Set(cli.map((r) => r.id)).size, 1200);
  shm.close();
  await expectFdsBackTo(d.daemon.child.pid!, baseline, 10000, 'the daemon freed all 1,200 regions');
  assert.deepEqual(
    StatusJson.parse(JSON.parse(await status('--json'))).regions.filter((r) => mine.has(r.id)),
    [],
  );
});
