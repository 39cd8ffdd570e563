// Quotas per uid (docs/security.md, "Quotas"), attacked for real by a process running as
// uid 65534: it cannot take more vchans, waiting slots, shared memory or connections than its
// quota, and root is served all along.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { socketPath } from '../../src/paths.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { startDaemon, teardown, type TestDaemon } from '../helpers/daemon-fixture.js';

const NOBODY = 65534;
const python = ['/usr/bin/python3', '/usr/bin/python3.11'].find((p) => fs.existsSync(p));
const asRoot = process.getuid?.() === 0;
const skip = !asRoot ? 'needs root (the attacker runs as another uid)' : false;

let d: TestDaemon;
let nobody: PeerProcess;

before(async () => {
  d = await startDaemon({
    config: {
      limits: { maxVchansPerUid: 4, maxWaitingClientsPerUid: 3, maxShmBytesPerUid: 1 << 20, maxConnectionsPerUid: 12 },
      // root serves the attacker's waiting clients (docs/security.md, "Policy").
      policy: { hostRules: [{ ports: '300-302', allowUids: [NOBODY] }] },
    },
  });
  fs.chmodSync(d.runtimeDir, 0o755);
  fs.chmodSync(socketPath(d.runtimeDir), 0o666);
  if (asRoot) nobody = await PeerProcess.spawn(d.runtimeDir, { uid: NOBODY, gid: NOBODY });
});

after(() =>
  teardown(
    () => nobody?.end(),
    () => d?.stop(),
  ),
);

test('vchans and shared-memory bytes per uid: EDQUOT for the attacker, root unaffected', { skip }, async () => {
  // 4 small vchans are allowed, the 5th is over the vchan quota.
  for (let i = 0; i < 4; i++) await nobody.ok({ op: 'listen', name: `s${i}`, port: 1100 + i });
  const fifth = await nobody.call({ op: 'listen', name: 's4', port: 1104 });
  assert.equal(fifth.ok, false);
  assert.equal(fifth.error?.code, 'KVMCHAN_E_DAEMON_EDQUOT', JSON.stringify(fifth.error));
  assert.match(fifth.error?.message ?? '', /quota/);
  for (let i = 0; i < 4; i++) await nobody.ok({ op: 'close', name: `s${i}` });
  // 2 × 256 KiB rings: the second such vchan goes over 1 MiB of shared memory.
  await nobody.ok({ op: 'listen', name: 'big0', port: 1110, readMin: 256 * 1024, writeMin: 256 * 1024 });
  const big = await nobody.call({ op: 'listen', name: 'big1', port: 1111, readMin: 256 * 1024, writeMin: 256 * 1024 });
  assert.equal(big.error?.code, 'KVMCHAN_E_DAEMON_EDQUOT', JSON.stringify(big.error));
  // root is not limited by any of it.
  const mine = await Promise.all(
    Array.from({ length: 6 }, (_, i) => Vchan.listen({ runtimeDir: d.runtimeDir, port: 200 + i, readMin: 256 * 1024 })),
  );
  for (const v of mine) v.close();
  await nobody.ok({ op: 'close', name: 'big0' });
  // Freed quota is usable again.
  await nobody.ok({ op: 'listen', name: 'again', port: 1112 });
  await nobody.ok({ op: 'close', name: 'again' });
});

test('waiting clients per uid: the attacker cannot fill the waiting table', { skip }, async () => {
  const waits = Array.from({ length: 3 }, (_, i) => nobody.call({ op: 'connect', name: `w${i}`, port: 300 + i, timeout: 60_000 }));
  const fourth = await nobody.call({ op: 'connect', name: 'w3', port: 303, timeout: 60_000 });
  assert.equal(fourth.ok, false);
  assert.equal(fourth.error?.code, 'KVMCHAN_E_DAEMON_EAGAIN', JSON.stringify(fourth.error));
  // root can still wait, and be served.
  const rootWait = Vchan.connect({ runtimeDir: d.runtimeDir, port: 310, timeout: 10_000 });
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 310 });
  (await rootWait).close();
  server.close();
  // Serve the attacker's three so its waits end.
  const servers = await Promise.all([300, 301, 302].map((port) => Vchan.listen({ runtimeDir: d.runtimeDir, port, domain: 0 })));
  for (const w of await Promise.all(waits)) assert.equal(w.ok, true);
  for (let i = 0; i < 3; i++) await nobody.ok({ op: 'close', name: `w${i}` });
  for (const s of servers) s.close();
});

test(
  'connections per uid: 50 idle connections from the attacker, only its quota is kept',
  { skip: skip || (python === undefined ? 'needs /usr/bin/python3' : false) },
  async () => {
    // The attacker opens 50 connections and asks GET_VERSION on each: the daemon answers the
    // first 12 (its peer process closed every vchan, so it holds none) and closes the rest at once.
    const script = [
      'import socket, struct',
      `path = ${JSON.stringify(socketPath(d.runtimeDir))}`,
      'conns = []',
      'for i in range(50):',
      '    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)',
      '    s.connect(path)',
      '    conns.append(s)',
      'answered = 0',
      'for s in conns:',
      '    s.settimeout(5)',
      '    try:',
      '        s.send(struct.pack("<HHI", 1, 0, 1))',
      '        if len(s.recv(65536)) > 0: answered += 1',
      '    except Exception:',
      '        pass',
      'print(answered, flush=True)',
    ].join('\n');
    const child = spawn(python!, ['-c', script], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    assert.equal(code, 0);
    assert.equal(Number(out.trim()), 12, `answered connections: ${out}`);
    // root connects fine meanwhile.
    (await Vchan.listen({ runtimeDir: d.runtimeDir, port: 400 })).close();
  },
);
