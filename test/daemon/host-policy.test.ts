// The policy between host uids (docs/security.md, "Policy"), attacked for real by processes
// running as uid 65534 (nobody) and 65533: a host server accepts clients of its own uid and
// root, plus whom a host rule allows; a refused client gets EPERM and nothing else; a client of
// another uid that waits before the server exists is refused when it appears, not attached;
// low ports, and ports a rule reserves to a uid, cannot be served by anybody else.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { socketPath } from '../../src/paths.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { startDaemon, teardown, waitFor, type TestDaemon } from '../helpers/daemon-fixture.js';
import { logged } from '../helpers/guest-fixture.js';

const NOBODY = 65534;
const OTHER = 65533;
const asRoot = process.getuid?.() === 0;
const skip = !asRoot ? 'needs root (the attackers run as other uids)' : false;

let d: TestDaemon;
let nobody: PeerProcess;
let nobody2: PeerProcess;
let other: PeerProcess;
let rootPeer: PeerProcess;

before(async () => {
  d = await startDaemon({
    logLevel: 'debug',
    config: {
      policy: {
        hostRules: [
          { ports: '5000-5009', allowUids: [NOBODY] },
          // nogroup is nobody's primary group (gid 65534).
          { ports: 5100, allowGroups: ['nogroup'] },
          { ports: 6000, serverUid: NOBODY },
          { ports: 700, serverUid: NOBODY },
        ],
      },
    },
  });
  fs.chmodSync(d.runtimeDir, 0o755);
  fs.chmodSync(socketPath(d.runtimeDir), 0o666);
  if (!asRoot) return;
  nobody = await PeerProcess.spawn(d.runtimeDir, { uid: NOBODY, gid: NOBODY });
  nobody2 = await PeerProcess.spawn(d.runtimeDir, { uid: NOBODY, gid: NOBODY });
  other = await PeerProcess.spawn(d.runtimeDir, { uid: OTHER, gid: OTHER });
  rootPeer = await PeerProcess.spawn(d.runtimeDir);
});

after(() =>
  teardown(
    () => nobody?.end(),
    () => nobody2?.end(),
    () => other?.end(),
    () => rootPeer?.end(),
    () => d?.stop(),
  ),
);

function refusedByPolicy(r: { ok: boolean; error?: { code: string | null } }, what: string): void {
  assert.equal(r.ok, false, `${what}: should have been refused`);
  assert.equal(r.error?.code, 'KVMCHAN_E_DAEMON_EPERM', `${what}: ${JSON.stringify(r.error)}`);
}

test('a server accepts its own uid and root; another uid gets EPERM, even on a busy vchan', { skip }, async () => {
  const rootServer = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 4000 });
  try {
    refusedByPolicy(await nobody.call({ op: 'connect', name: 'steal', port: 4000, timeout: 0 }), "nobody → root's server");
    await rootPeer.ok({ op: 'connect', name: 'r', port: 4000, timeout: 5000 });
    await rootServer.waitConnected({ timeout: 5000 });
    // Busy now: a refused uid learns no more than before (EPERM, not EBUSY).
    refusedByPolicy(await nobody.call({ op: 'connect', name: 'steal', port: 4000, timeout: 0 }), 'nobody → busy root server');
    await rootServer.write(Buffer.from('root only'));
    const got = await rootPeer.ok({ op: 'recv', name: 'r', size: 9 });
    assert.equal(Buffer.from(got['data'] as string, 'base64').toString(), 'root only');
    await rootPeer.ok({ op: 'close', name: 'r' });
  } finally {
    rootServer.close();
  }
  // nobody's server: nobody's other process and root attach, uid 65533 does not.
  await nobody.ok({ op: 'listen', name: 'n', port: 4001 });
  refusedByPolicy(await other.call({ op: 'connect', name: 'x', port: 4001, timeout: 0 }), "65533 → nobody's server");
  await nobody2.ok({ op: 'connect', name: 'n', port: 4001, timeout: 5000 });
  await nobody.ok({ op: 'close', name: 'n' });
  await nobody2.ok({ op: 'close', name: 'n' });
  await nobody.ok({ op: 'listen', name: 'n', port: 4001 });
  const rootClient = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 4001, timeout: 5000 });
  rootClient.close();
  await nobody.ok({ op: 'close', name: 'n' });
});

test('a client of another uid waiting before the server exists is refused when it appears, not attached', { skip }, async () => {
  const squatter = nobody.call({ op: 'connect', name: 'squat', port: 4002, timeout: 20_000 });
  const rootWait = rootPeer.call({ op: 'connect', name: 'w', port: 4002, timeout: 20_000 });
  // Both waits are registered in the daemon before the server appears.
  await waitFor(() => logged(d.log(), 'client waiting for a server', { port: 4002 }).length === 2, 10_000, 'both clients waiting');
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 4002 });
  try {
    refusedByPolicy(await squatter, 'the waiting squatter');
    const w = await rootWait;
    assert.equal(w.ok, true, JSON.stringify(w.error));
    await server.waitConnected({ timeout: 5000 });
    await rootPeer.ok({ op: 'close', name: 'w' });
  } finally {
    server.close();
  }
});

test('host rules: allowUids and allowGroups open a port range to another uid; others stay closed', { skip }, async () => {
  for (const port of [5000, 5009, 5100]) {
    const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port });
    try {
      await nobody.ok({ op: 'connect', name: `ok${port}`, port, timeout: 5000 });
      await server.waitConnected({ timeout: 5000 });
      await nobody.ok({ op: 'write', name: `ok${port}`, data: Buffer.from(`hi ${port}`).toString('base64') });
      assert.equal((await server.recv(`hi ${port}`.length))?.toString(), `hi ${port}`);
      // The rule names nobody (or its group), not every uid.
      refusedByPolicy(await other.call({ op: 'connect', name: 'x', port, timeout: 0 }), `65533 → port ${port}`);
      await nobody.ok({ op: 'close', name: `ok${port}` });
    } finally {
      server.close();
    }
  }
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 5010 });
  try {
    refusedByPolicy(await nobody.call({ op: 'connect', name: 'x', port: 5010, timeout: 0 }), 'nobody → port outside the rule');
  } finally {
    server.close();
  }
});

test('reserved ports: below 1024 root only; a serverUid rule gives a port to one uid, and only to it', { skip }, async () => {
  refusedByPolicy(await nobody.call({ op: 'listen', name: 'low', port: 80 }), 'nobody serving port 80');
  refusedByPolicy(await other.call({ op: 'listen', name: 'low', port: 700 }), 'uid 65533 serving port 700 (given to nobody)');
  refusedByPolicy(await other.call({ op: 'listen', name: 'high', port: 6000 }), 'uid 65533 serving port 6000 (reserved to nobody)');
  await nobody.ok({ op: 'listen', name: 'p700', port: 700 });
  await nobody.ok({ op: 'listen', name: 'p6000', port: 6000 });
  await nobody.ok({ op: 'close', name: 'p700' });
  await nobody.ok({ op: 'close', name: 'p6000' });
  (await Vchan.listen({ runtimeDir: d.runtimeDir, port: 80 })).close();
  (await Vchan.listen({ runtimeDir: d.runtimeDir, port: 6000 })).close();
});
