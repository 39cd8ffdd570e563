// VM tier (issue 9 §3) with two real TCG guests served by one host kvmchand through its QMP
// backend (docs/vms-qmp.md). A guest↔guest vchan allowed by `policy.guestPairs` runs through a
// pair pool hot-plugged into both VMs, with the host out of the data path; and the C library
// (libvchan-kvm, clib's vchan_peer) in a guest talks to the TypeScript API on the host.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { teardown } from '../helpers/daemon-fixture.js';
import { REPO_ROOT, vmPrerequisites, type GuestProcess, type TestVm } from '../helpers/vm.js';
import {
  GUEST_RUNTIME,
  MiB,
  PEER,
  QmpHost,
  bootForQmp,
  guestResult,
  hostPeer,
  mbps,
  startGuestDaemon,
  type PeerResult,
} from '../helpers/qmp-vm.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const C_PEER = path.join(REPO_ROOT, 'clib', 'build', 'test', 'vchan_peer');
const A = 1;
const B = 2;

let host: QmpHost | null = null;
const vms: TestVm[] = [];
const daemons: GuestProcess[] = [];

before(async () => {
  if ('reason' in pre) return;
  // clib's test drivers are not part of `npm run build`.
  if (!fs.existsSync(C_PEER)) execFileSync('make', ['-s', '-C', path.join(REPO_ROOT, 'clib'), 'test-drivers'], { stdio: 'inherit' });
  host = new QmpHost();
  await host.start({
    vms: [
      { name: 'guest-a', qmp: host.qmpLink('guest-a'), id: A },
      { name: 'guest-b', qmp: host.qmpLink('guest-b'), id: B },
    ],
    qmp: { retryMs: 200 },
    policy: { guestPairs: [[A, B]] },
  });
  const booted = await Promise.allSettled(
    ['guest-a', 'guest-b'].map((n) => bootForQmp(host!.qmpLink(n), { qemu: pre.qemu, image: pre.image, rootPorts: 6 })),
  );
  for (const b of booted) if (b.status === 'fulfilled') vms.push(b.value);
  for (const b of booted) if (b.status === 'rejected') throw b.reason;
  assert.equal(await host.waitDomain('guest-a'), A);
  assert.equal(await host.waitDomain('guest-b'), B);
  daemons.push(...(await Promise.all(vms.map((v) => startGuestDaemon(v)))));
});

after(async () => {
  await teardown(...vms.map((v) => async () => v.shutdown()), async () => host?.close());
});

test(
  'guest ↔ guest through a pair pool: 16 MiB each way, SHA-256 intact, the host only brokers',
  { skip, timeout: 1_800_000 },
  async (t) => {
    const BYTES = 16 * MiB;
    const [va, vb] = vms as [TestVm, TestVm];
    const server = va.start(['node', PEER, 'server', GUEST_RUNTIME, String(B), '600', String(BYTES)], { timeoutMs: 1_800_000 });
    await server.waitForOutput(/^READY /m, 600_000);
    const client = vb.start(['node', PEER, 'client', GUEST_RUNTIME, String(A), '600', String(BYTES)], { timeoutMs: 1_800_000 });
    let seen: unknown = null;
    let pairPool: unknown = null;
    let finished = false;
    const results = Promise.all([guestResult(server, 1_800_000), guestResult(client, 1_800_000)]).finally(() => (finished = true));
    while (!finished && seen === null) {
      const st = await host!.status();
      const v = st.vchans.find((x) => x.serverDomain === A && x.clientDomain === B && x.port === 600);
      const p = st.pools.find((x) => (x.memberA === A && x.memberB === B) || (x.memberA === B && x.memberB === A));
      if (v !== undefined && p !== undefined && v.clientState === 1 && v.serverState === 1) {
        seen = v;
        pairPool = p;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    const [sr, cr] = await results;
    t.diagnostic(`host status during the transfer: vchan ${JSON.stringify(seen)}; pool ${JSON.stringify(pairPool)}`);
    t.diagnostic(`server (guest ${A}): ${mbps(sr)}; client (guest ${B}): ${mbps(cr)}`);
    assert.equal(sr.received, cr.sent, `guest ${B} → guest ${A}`);
    assert.equal(cr.received, sr.sent, `guest ${A} → guest ${B}`);
    assert.notEqual(seen, null, 'the host daemon listed the vchan between the two guest domains');
    assert.notEqual(pairPool, null, 'a pair pool of both guests exists');
    for (const [i, d] of daemons.entries()) {
      const attached = d
        .stdout()
        .split('\n')
        .filter((l) => l.includes('"msg":"pool attached"'));
      assert.ok(attached.length >= 2, `guest ${i + 1} attached its host pool and the pair pool:\n${attached.join('\n')}`);
    }
  },
);

interface CReport {
  event: string;
  sent: number;
  sent_sha256: string;
  received: number;
  received_sha256: string;
  seconds: number;
}

async function cResult(p: GuestProcess): Promise<CReport> {
  const m = await p.waitForOutput(/^(\{"event":"done".*)$/m, 1_200_000);
  const r = await p.done;
  assert.equal(r.code, 0, `vchan_peer failed: ${r.stderr}`);
  return JSON.parse(m[1]!) as CReport;
}

function checkC(c: CReport, h: PeerResult, bytes: number): void {
  assert.equal(c.sent, bytes);
  assert.equal(c.received, bytes);
  assert.equal(c.received_sha256, h.sent, 'host (TypeScript) → guest (C)');
  assert.equal(c.sent_sha256, h.received, 'guest (C) → host (TypeScript)');
}

test(
  'libvchan-kvm in the guest (C client) ↔ TypeScript API on the host (server): 16 MiB each way, SHA-256 both ways',
  { skip, timeout: 1_200_000 },
  async (t) => {
    const BYTES = 16 * MiB;
    const h = hostPeer(['server', host!.runtimeDir, String(A), '700', String(BYTES)]);
    await h.ready;
    const c = vms[0]!.start([C_PEER, 'client', '0', '700', String(BYTES), String(BYTES)], {
      env: { KVMCHAN_RUNTIME_DIR: GUEST_RUNTIME },
      timeoutMs: 1_200_000,
    });
    const [hr, cr] = await Promise.all([h.done, cResult(c)]);
    checkC(cr, hr, BYTES);
    t.diagnostic(`host (TS): ${mbps(hr)}; guest (C): ${cr.seconds} s`);
  },
);

test(
  'libvchan-kvm in the guest (C server) ↔ TypeScript API on the host (client): 16 MiB each way, SHA-256 both ways',
  { skip, timeout: 1_200_000 },
  async (t) => {
    const BYTES = 16 * MiB;
    const c = vms[0]!.start([C_PEER, 'server', '0', '701', String(BYTES), String(BYTES)], {
      env: { KVMCHAN_RUNTIME_DIR: GUEST_RUNTIME },
      timeoutMs: 1_200_000,
    });
    await c.waitForOutput(/"event":"listening"/, 600_000);
    const h = hostPeer(['client', host!.runtimeDir, String(A), '701', String(BYTES)]);
    const [hr, cr] = await Promise.all([h.done, cResult(c)]);
    checkC(cr, hr, BYTES);
    t.diagnostic(`host (TS): ${mbps(hr)}; guest (C): ${cr.seconds} s`);
  },
);
