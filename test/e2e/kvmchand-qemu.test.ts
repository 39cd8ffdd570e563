// Tier 3 (docs/testing.md): real QEMU attaches to devices served by a running kvmchand —
// the control device and the first pool of a guest domain, through the sockets the daemon
// creates for that domain — and the daemon treats QEMU's connection as that guest (IVPosition 1:
// the control channel is offered, the pool counts the member as attached); killing QEMU detaches it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import { QemuProcess, ensureQemu } from '../helpers/qemu.js';
import { waitFor } from '../helpers/wait.js';
import { fromStatusJson } from '../helpers/guest-fixture.js';
import type { StatusJson as CliStatusJson } from '../../src/cli/status-json.js';

const found = ensureQemu();
const skip = 'reason' in found ? found.reason : false;
if (skip !== false) console.error(`\n#####\n# SKIPPING kvmchand + QEMU end-to-end tests: ${skip}\n#####\n`);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

let dir = '';
let logFile = '';
let daemon: PrivateDaemon | null = null;
let qemu: QemuProcess | null = null;

interface StatusJson {
  domains: { domain: number; name: string }[];
  pools: { pool: number; memberA: number; joined: number; size: number; vectors: number }[];
}

function status(): StatusJson {
  return fromStatusJson(
    JSON.parse(
      execFileSync(process.execPath, [CLI, '--runtime-dir', daemon!.runtimeDir, 'status', '--json'], { encoding: 'utf8' }),
    ) as CliStatusJson,
  );
}

function logLines(): { msg?: string; domain?: number }[] {
  return fs
    .readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg?: string; domain?: number });
}

before(async () => {
  if (skip !== false) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-e2e-d-'));
  logFile = path.join(dir, 'kvmchand.log');
  daemon = await PrivateDaemon.start({ extraArgs: ['--simulate-guests', '1'], logLevel: 'info', logFile });
  qemu = await QemuProcess.start({ binary: 'path' in found ? found.path : '', dir, rootPorts: 2 });
});

after(async () => {
  await qemu?.kill();
  await daemon?.stop();
  if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
});

test('QEMU hot-plugs the control device and pool that kvmchand serves for a guest domain', { skip }, async (t) => {
  const q = qemu!;
  const domainDir = path.join(daemon!.runtimeDir, 'domains', '1');
  const poolSocket = fs.readdirSync(domainDir).find((f) => /^pool-\d+\.sock$/.test(f));
  assert.ok(poolSocket !== undefined, `a pool socket in ${domainDir}`);
  const before = status();
  const pool = before.pools.find((p) => p.memberA === 1)!;
  assert.equal(pool.joined, 0, 'nobody attached yet');

  const plug = async (id: string, socket: string, vectors: number, bus: string): Promise<number> => {
    const t0 = performance.now();
    await q.qmp.execute('chardev-add', {
      id: `char-${id}`,
      backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: path.join(domainDir, socket) } }, server: false } },
    });
    await q.qmp.execute('device_add', { driver: 'ivshmem-doorbell', id, chardev: `char-${id}`, vectors, bus });
    assert.equal(await q.qmp.execute('qom-get', { path: `/machine/peripheral/${id}`, property: 'realized' }), true);
    return performance.now() - t0;
  };
  const controlMs = await plug('kvmchan-control', 'control.sock', 1, 'rp1');
  const poolMs = await plug('kvmchan-pool', poolSocket, pool.vectors, 'rp2');
  t.diagnostic(
    `control device plugged in ${controlMs.toFixed(1)} ms, pool (${pool.size >> 20} MiB, ${pool.vectors} vectors) in ${poolMs.toFixed(1)} ms`,
  );
  assert.equal(
    await q.qmp.execute('qom-get', { path: '/machine/peripheral/kvmchan-control/ivshmem.bar2[0]', property: 'size' }),
    256 * 1024,
  );
  assert.equal(await q.qmp.execute('qom-get', { path: '/machine/peripheral/kvmchan-pool/ivshmem.bar2[0]', property: 'size' }), pool.size);

  // The daemon sees QEMU as domain 1: it offers the control channel and counts the pool member.
  await waitFor(() => logLines().some((l) => l.msg === 'guest control channel offered' && l.domain === 1), 5000, 'control channel offered');
  await waitFor(() => status().pools.find((p) => p.pool === pool.pool)?.joined === 1, 5000, 'pool member attached');

  // QEMU dies: the daemon detaches the guest and keeps serving.
  await q.kill();
  qemu = null;
  await waitFor(() => logLines().some((l) => l.msg === 'guest control channel closed' && l.domain === 1), 5000, 'control channel closed');
  await waitFor(() => status().pools.find((p) => p.pool === pool.pool)?.joined === 0, 5000, 'pool member detached');
  assert.deepEqual(
    status().domains.map((d) => d.domain),
    [0, 1],
  );
});
