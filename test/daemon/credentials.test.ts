/**
 * Callers are told apart by SO_PEERCRED (docs/security.md, "Local socket"): a process of another uid cannot close
 * or list vchans it did not open, handles belong to the connection that received them, and
 * nobody can take over a vchan that already has a client.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { DaemonConnection } from '../../src/client/daemon-connection.js';
import { Command } from '../../src/protocol/constants.js';
import { DaemonError } from '../../src/errors.js';
import { socketPath } from '../../src/paths.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { startDaemon, teardown, type TestDaemon } from '../helpers/daemon-fixture.js';

const NOBODY = 65534;

let d: TestDaemon;
let rootServer: Vchan;
let rootWaiting: Vchan;
let rootPeer: PeerProcess;
let nobody: PeerProcess;

before(async () => {
  // nobody may attach to root's port 50 (docs/security.md, "Policy"), so that what stops it
  // there is the vchan's client, not the policy.
  d = await startDaemon({ config: { policy: { hostRules: [{ ports: 50, allowUids: [NOBODY] }] } } });
  // Let another uid reach the socket (the default is 0660 for root and group kvmchan).
  fs.chmodSync(d.runtimeDir, 0o755);
  fs.chmodSync(socketPath(d.runtimeDir), 0o666);
  rootServer = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 50 });
  rootWaiting = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 51 });
  rootPeer = await PeerProcess.spawn(d.runtimeDir);
  await rootPeer.ok({ op: 'connect', port: 50, timeout: 5000 });
  await rootServer.waitConnected({ timeout: 5000 });
  nobody = await PeerProcess.spawn(d.runtimeDir, { uid: NOBODY, gid: NOBODY });
});

after(() =>
  teardown(
    () => rootServer?.close(),
    () => rootWaiting?.close(),
    () => rootPeer?.end(),
    () => nobody?.end(),
    () => d?.stop(),
  ),
);

async function rootList(): Promise<{ handle: number; port: number; serverPid: number; clientPid: number }[]> {
  const conn = await DaemonConnection.open(d.runtimeDir);
  try {
    return (await conn.request(Command.LIST_VCHANS, { start: 0 })).body.entries;
  } finally {
    conn.close();
  }
}

test('the other process really runs as another uid', async () => {
  const ready = await nobody.ready;
  assert.equal(ready.uid, NOBODY);
});

test('LIST_VCHANS shows another uid only its own vchans; root sees all', async () => {
  const own = await nobody.ok({ op: 'listen', name: 'own', port: 1060 });
  const seen = await nobody.ok({ op: 'daemon', request: 'listVchans' });
  const entries = seen['entries'] as { handle: number; port: number; serverPid: number }[];
  assert.deepEqual(
    entries.map((e) => e.port),
    [1060],
    'an unprivileged caller must see its own vchan and none of root’s',
  );
  assert.equal(entries[0]!.handle, own['handle']);
  assert.equal(entries[0]!.serverPid, nobody.pid);
  const all = await rootList();
  for (const port of [50, 51, 1060])
    assert.ok(
      all.some((e) => e.port === port),
      `root should see port ${port}`,
    );
  const p50 = all.find((e) => e.port === 50)!;
  assert.equal(p50.serverPid, process.pid);
  assert.equal(p50.clientPid, rootPeer.pid);
});

test('VCHAN_CLOSE of a handle the caller does not hold is refused (EPERM) and changes nothing', async () => {
  for (const v of [rootServer, rootWaiting]) {
    const r = await nobody.call({ op: 'daemon', request: 'close', handle: v.handle });
    assert.equal(r.ok, false, `another uid closed root's vchan ${v.handle}`);
    assert.equal(r.error?.code, 'KVMCHAN_E_DAEMON_EPERM');
  }
  // Handles belong to the connection that received them, not to the uid or process: root's
  // own other connection cannot close them either, nor the nobody process its own vchan
  // through a second connection.
  const conn = await DaemonConnection.open(d.runtimeDir);
  try {
    await assert.rejects(conn.request(Command.VCHAN_CLOSE, { handle: rootServer.handle }), (err: unknown) => {
      assert.ok(err instanceof DaemonError);
      assert.equal(err.code, 'KVMCHAN_E_DAEMON_EPERM');
      return true;
    });
  } finally {
    conn.close();
  }
  const ownHandle = (await rootList()).find((e) => e.port === 1060)!.handle;
  const r = await nobody.call({ op: 'daemon', request: 'close', handle: ownHandle });
  assert.equal(r.ok, false);
  assert.equal(r.error?.code, 'KVMCHAN_E_DAEMON_EPERM');

  // Nothing was closed.
  assert.equal(rootServer.state, 'connected');
  assert.equal(rootWaiting.state, 'waiting');
  await rootServer.write(Buffer.from('intact'));
  const got = await rootPeer.ok({ op: 'recv', size: 6 });
  assert.equal(Buffer.from(got['data'] as string, 'base64').toString(), 'intact');
  assert.deepEqual(
    (await rootList()).map((e) => e.port).sort((a, b) => a - b),
    [50, 51, 1060],
  );
});

test('nobody can take over a vchan that already has a client (EBUSY), whatever its uid', async () => {
  const other = await nobody.call({ op: 'connect', name: 'steal', port: 50, timeout: 0 });
  assert.equal(other.ok, false);
  assert.equal(other.error?.code, 'KVMCHAN_E_DAEMON_EBUSY');
  const root2 = await PeerProcess.spawn(d.runtimeDir);
  try {
    const r = await root2.call({ op: 'connect', port: 50, timeout: 0 });
    assert.equal(r.ok, false);
    assert.equal(r.error?.code, 'KVMCHAN_E_DAEMON_EBUSY');
    // A client that may wait waits for the port to be served again, never gets this vchan.
    const waited = await nobody.call({ op: 'connect', name: 'steal', port: 50, timeout: 300 });
    assert.equal(waited.ok, false);
    assert.equal(waited.error?.code, 'KVMCHAN_E_TIMEOUT');
  } finally {
    await root2.end();
  }
  // The rightful client still has the vchan.
  await rootPeer.ok({ op: 'writePattern', seed: 1, bytes: 10 });
  assert.equal((await rootServer.recv(10))?.length, 10);
  assert.equal(rootServer.state, 'connected');
});

test('another uid cannot serve a port whose vchan has a client, so cannot take the next clients over', async () => {
  // The port's owner may serve it again while connected (docs/api.md "Serving many clients");
  // anyone else would then receive the clients meant for it.
  // Port 50 is also below policy.reservedPortsBelow: root's alone (EPERM, checked first).
  const stolen = await nobody.call({ op: 'listen', name: 'squat', port: 50 });
  assert.equal(stolen.ok, false, 'a foreign uid served a port owned by root');
  assert.equal(stolen.error?.code, 'KVMCHAN_E_DAEMON_EPERM');
  // Above the reserved range, root's served port 1060 is root's: EEXIST.
  const high = await nobody.call({ op: 'listen', name: 'squat-high', port: 1060 });
  assert.equal(high.ok, false, 'a foreign uid served a port root serves');
  assert.equal(high.error?.code, 'KVMCHAN_E_DAEMON_EEXIST');
  // The owner can.
  const again = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 50 });
  try {
    assert.equal(again.state, 'waiting');
    assert.equal(rootServer.state, 'connected', 'the connected vchan keeps running');
    await rootPeer.ok({ op: 'writePattern', seed: 2, bytes: 10 });
    assert.equal((await rootServer.recv(10))?.length, 10);
  } finally {
    again.close();
  }
});
