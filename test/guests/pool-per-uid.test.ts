// One pool per (guest, host uid) (docs/security.md, "Pools"): a host process that holds a
// pool's memfd can map all of it, so host processes of different uids must never be handed the
// same pool. Attacked for real: root has a vchan to simulated guest 1 with data sitting in its
// ring; a process of uid 65534 (nobody) opens its own vchans to the same guest — as server, and
// as client of a guest's server — maps the whole shm object it was given and looks for root's
// bytes. It also cannot attach to what the guest serves for root.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { socketPath } from '../../src/paths.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { teardown, type TestDaemon } from '../helpers/daemon-fixture.js';
import { startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';

const NOBODY = 65534;
const GUEST = 1;
const SEED = seedFromEnv(0x9001);
const asRoot = process.getuid?.() === 0;
const skip = !asRoot ? 'needs root (the attacker runs as another uid)' : false;

let host: TestDaemon;
let g1: TestGuest;
let guestApp: PeerProcess;
let rootRaw: PeerProcess;
let nobody: PeerProcess;
let rootVchan: Vchan | undefined;
/** Bytes root wrote to its vchan and the guest has not read: they sit in root's pool. */
let marker: Buffer;

before(async () => {
  host = await startHost({ guests: 1, config: { policy: { guestServices: [{ ports: '2030-2039', hostUid: NOBODY }] } } });
  fs.chmodSync(host.runtimeDir, 0o755);
  fs.chmodSync(socketPath(host.runtimeDir), 0o666);
  g1 = await startGuest(host, GUEST);
  guestApp = await PeerProcess.spawn(g1.runtimeDir);
  if (!asRoot) return;
  rootRaw = await PeerProcess.spawn(host.runtimeDir);
  nobody = await PeerProcess.spawn(host.runtimeDir, { uid: NOBODY, gid: NOBODY });
  rootVchan = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: GUEST, port: 2010 });
  await guestApp.ok({ op: 'connect', name: 'root10', domain: 0, port: 2010, timeout: 10_000 });
  await rootVchan.waitConnected({ timeout: 10_000 });
  marker = new Prng(SEED).bytes(256);
  await rootVchan.write(marker);
});

after(() =>
  teardown(
    () => rootVchan?.close(),
    () => guestApp?.end(),
    () => rootRaw?.end(),
    () => nobody?.end(),
    () => g1?.stop(),
    () => host?.stop(),
  ),
);

test('another uid gets a pool of its own: a different shm object, without root’s bytes', { skip }, async () => {
  // Root's own second vchan to the guest: root's pool, which holds the marker (the scan works).
  const mine = await rootRaw.ok({ op: 'rawInit', name: 'r', domain: GUEST, port: 2011 });
  const seenByRoot = await rootRaw.ok({ op: 'rawScan', name: 'r', marker: marker.toString('base64') });
  assert.ok((seenByRoot['found'] as number[]).length > 0, 'root’s pool holds root’s bytes');

  const theirs = await nobody.ok({ op: 'rawInit', name: 'n', domain: GUEST, port: 2012 });
  assert.notEqual(theirs['ino'], mine['ino'], 'nobody was handed root’s pool memfd');
  const seenByNobody = await nobody.ok({ op: 'rawScan', name: 'n', marker: marker.toString('base64') });
  assert.deepEqual(seenByNobody['found'], [], 'root’s bytes are readable through nobody’s memfd');
  await nobody.ok({ op: 'rawClose', name: 'n' });
  await rootRaw.ok({ op: 'rawClose', name: 'r' });
});

test('a vchan of the other uid to the guest works both ways in its own pool', { skip }, async () => {
  await nobody.ok({ op: 'listen', name: 'n13', domain: GUEST, port: 2013 });
  await guestApp.ok({ op: 'connect', name: 'n13', domain: 0, port: 2013, timeout: 10_000 });
  await nobody.ok({ op: 'waitConnected', name: 'n13' });
  await guestApp.ok({ op: 'write', name: 'n13', data: Buffer.from('to nobody').toString('base64') });
  const got = await nobody.ok({ op: 'recv', name: 'n13', size: 9 });
  assert.equal(Buffer.from(got['data'] as string, 'base64').toString(), 'to nobody');
  await nobody.ok({ op: 'write', name: 'n13', data: Buffer.from('from nobody').toString('base64') });
  const back = await guestApp.ok({ op: 'recv', name: 'n13', size: 11 });
  assert.equal(Buffer.from(back['data'] as string, 'base64').toString(), 'from nobody');
  await nobody.ok({ op: 'close', name: 'n13' });
  await guestApp.ok({ op: 'close', name: 'n13' });
  // Root still reads what the guest sends it: its pool was not disturbed.
  await guestApp.ok({ op: 'write', name: 'root10', data: Buffer.from('still root').toString('base64') });
  assert.equal((await rootVchan!.recv(10))?.toString(), 'still root');
});

test('a guest’s server: only the host uid its port belongs to (and root) attaches, in that uid’s pool', { skip }, async () => {
  // Port 2020: no guestServices entry, so it belongs to the daemon's uid (root).
  await guestApp.ok({ op: 'listen', name: 'g20', domain: 0, port: 2020 });
  const refused = await nobody.call({ op: 'rawInit', name: 'x', role: 'client', domain: GUEST, port: 2020 });
  assert.equal(refused.ok, false);
  assert.equal(refused.error?.code, 'KVMCHAN_E_DAEMON_EPERM', JSON.stringify(refused.error));
  const rootClient = await Vchan.connect({ runtimeDir: host.runtimeDir, domain: GUEST, port: 2020, timeout: 10_000 });
  rootClient.close();
  await guestApp.ok({ op: 'close', name: 'g20' });

  // Port 2030 belongs to nobody: it attaches, and the memfd it gets is not root's pool.
  await guestApp.ok({ op: 'listen', name: 'g30', domain: 0, port: 2030 });
  const got = await nobody.ok({ op: 'rawInit', name: 'c30', role: 'client', domain: GUEST, port: 2030, timeout: 10_000 });
  const mine = await rootRaw.ok({ op: 'rawInit', name: 'r', domain: GUEST, port: 2014 });
  assert.notEqual(got['ino'], mine['ino']);
  const seen = await nobody.ok({ op: 'rawScan', name: 'c30', marker: marker.toString('base64') });
  assert.deepEqual(seen['found'], []);
  await nobody.ok({ op: 'rawClose', name: 'c30' });
  await rootRaw.ok({ op: 'rawClose', name: 'r' });
  await guestApp.ok({ op: 'close', name: 'g30' });
});
