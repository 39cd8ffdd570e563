// VM tier with libvirt (docs/vms-libvirt.md): real TCG guests run by a real libvirtd (started and
// stopped by the fixture), served by a host kvmchand through its libvirt backend. The guests'
// daemons drive the ivshmem devices through VFIO; data is checked with SHA-256. kvmchand runs
// under a fake service manager (test/helpers/fake-service-manager.ts) that keeps the fds it
// stores. Domain A gets its devices hot-plugged; restarted, kvmchand adopts A with those fds (A's
// guest daemon follows by itself), and without them refuses it as stale. Domain B is persistent
// and declares its control device in its XML (a boot device kvmchand listens for), so it is
// served again whenever it boots.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DOMAINS_DIR } from '../../src/daemon/vmm/domain-dir.js';
import { bootControlPath } from '../../src/daemon/vmm/libvirt/libvirt-vmm.js';
import { teardown } from '../helpers/daemon-fixture.js';
import { FakeServiceManager } from '../helpers/fake-service-manager.js';
import { ensureLibvirt, osLessDomainXml, type LibvirtEnv } from '../helpers/libvirt.js';
import { LibvirtVm } from '../helpers/libvirt-vm.js';
import { REPO_ROOT, vmPrerequisites, type GuestProcess } from '../helpers/vm.js';
import { waitFor } from '../helpers/wait.js';
import {
  GUEST_RUNTIME,
  MiB,
  PEER,
  QmpHost,
  expectedHash,
  guestResult,
  hostPeer,
  mbps,
  startGuestDaemon,
  streamFrom,
} from '../helpers/qmp-vm.js';

const pre = vmPrerequisites();
const lv = 'reason' in pre ? pre : await ensureLibvirt();
const skip = 'reason' in lv ? lv.reason : false;
const A = 'kvmchan-test-a';
const B = 'kvmchan-test-b';
const NOBODY = 65534;

let env: LibvirtEnv | null = null;
let host: QmpHost | null = null;
let sm: FakeServiceManager | null = null;
const vms = new Map<string, LibvirtVm>();
const daemons = new Map<string, GuestProcess>();
const ids = new Map<string, number>();

function config(): Record<string, unknown> {
  return {
    libvirt: { socket: env!.socket, domains: [A, B, 'kvmchan-test-u'], bootDomains: [B], retryMs: 200 },
    policy: { guestPairs: 'all' },
  };
}

/** B's control device, declared in its persistent XML on root port 1. */
function bootDevice(): string {
  return (
    `<shmem name='kvmchan-ctl'><model type='ivshmem-doorbell'/><server path='${bootControlPath(host!.runtimeDir, B)}'/>` +
    `<msi vectors='1' ioeventfd='on'/><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></shmem>`
  );
}

const count = (msg: string, name?: string): number =>
  host!.logLines().filter((l) => l.msg === msg && (name === undefined || l.domainName === name || l.bootDomain === name)).length;

before(async () => {
  if ('reason' in lv || 'reason' in pre) return;
  env = lv;
  for (const n of [A, B, 'kvmchan-test-u']) spawnSync('virsh', ['-c', 'qemu:///system', 'destroy', n], { stdio: 'ignore' });
  host = new QmpHost();
  // The unprivileged QEMU of the last test must be able to pass through to the runtime dir, as
  // through /run/kvmchand (0755) in a real deployment.
  fs.chmodSync(host.dir, 0o755);
  fs.chmodSync(host.runtimeDir, 0o755);
  sm = new FakeServiceManager(host.dir);
  await host.startManaged(sm, config());
  await waitFor(() => host!.log().includes('libvirt connected'), 30_000, 'kvmchand connected to libvirtd', 50);
  await waitFor(() => fs.existsSync(bootControlPath(host!.runtimeDir, B)), 10_000, "B's boot device listening", 50);
  const booted = await Promise.allSettled([
    LibvirtVm.boot(env, { name: A }),
    LibvirtVm.boot(env, { name: B, persistent: true, devicesXml: bootDevice() }),
  ]);
  for (const b of booted) if (b.status === 'fulfilled') vms.set(b.value.name, b.value);
  for (const b of booted) if (b.status === 'rejected') throw b.reason;
  for (const n of [A, B]) ids.set(n, await host.waitDomain(n, 300_000));
  const started = await Promise.all([A, B].map((n) => startGuestDaemon(vms.get(n)!)));
  daemons.set(A, started[0]!);
  daemons.set(B, started[1]!);
});

after(async () => {
  await teardown(
    ...[...vms.values()].map((v) => async () => v.destroy()),
    async () => host?.close(),
    () => {
      sm?.close();
      return undefined;
    },
    async () => env?.stop(),
  );
});

test('libvirt domains are served by name; their guest daemons attach over VFIO', { skip }, async (t) => {
  const st = await host!.status();
  const names = st.domains.map((d) => `${d.domain}:${d.name}`);
  t.diagnostic(`domains: ${names.join(' ')}`);
  for (const n of [A, B]) {
    assert.ok(names.includes(`${ids.get(n)}:${n}`), `kvmchan status names libvirt domain ${n}`);
    const ready =
      daemons
        .get(n)!
        .stdout()
        .split('\n')
        .find((l) => l.includes('"msg":"kvmchand ready"')) ?? '';
    assert.match(ready, new RegExp(`"domain":${ids.get(n)}\\b`));
    assert.match(ready, /"devices":"vfio"/);
    const xml = env!.virsh('dumpxml', n);
    assert.match(xml, /<shmem name='kvmchan-ctl'>/, 'the control device is in the live XML');
    assert.match(xml, /<shmem name='kvmchan-pool-\d+'>/, 'a pool is in the live XML');
    assert.equal(xml.split("<shmem name='kvmchan-ctl'>").length - 1, 1, 'one control device');
  }
  assert.equal(count('libvirt domain served through its boot device', B), 1, 'B is served through the device its XML declares');
  assert.equal(count('libvirt domain served', A), 1, 'A got its control device hot-plugged');
  const cli = spawnSync(
    process.execPath,
    [path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js'), '--runtime-dir', host!.runtimeDir, 'status'],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(cli.status, 0, cli.stderr);
  assert.match(cli.stdout, new RegExp(A), '`kvmchan status` shows the libvirt name');
});

test('host ↔ libvirt guest, both directions at once: 64 MiB each way, SHA-256 on both ends', { skip, timeout: 1_800_000 }, async (t) => {
  const BYTES = 64 * MiB;
  const h = hostPeer(['server', host!.runtimeDir, String(ids.get(A)), '100', String(BYTES)]);
  await h.ready;
  const g = vms.get(A)!.start(['node', PEER, 'client', GUEST_RUNTIME, '0', '100', String(BYTES)], { timeoutMs: 1_800_000 });
  const [hr, gr] = await Promise.all([h.done, guestResult(g, 1_800_000)]);
  assert.equal(hr.sent, expectedHash(1, BYTES));
  assert.equal(gr.sent, expectedHash(2, BYTES));
  assert.equal(gr.received, hr.sent, 'host → guest');
  assert.equal(hr.received, gr.sent, 'guest → host');
  t.diagnostic(`host side: ${mbps(hr)}; guest side: ${mbps(gr)}`);
});

test('libvirt guest ↔ libvirt guest through a pair pool: 16 MiB each way, SHA-256 intact', { skip, timeout: 1_800_000 }, async (t) => {
  const BYTES = 16 * MiB;
  const [a, b] = [ids.get(A)!, ids.get(B)!];
  const server = vms.get(A)!.start(['node', PEER, 'server', GUEST_RUNTIME, String(b), '600', String(BYTES)], { timeoutMs: 1_800_000 });
  await server.waitForOutput(/^READY /m, 600_000);
  const client = vms.get(B)!.start(['node', PEER, 'client', GUEST_RUNTIME, String(a), '600', String(BYTES)], { timeoutMs: 1_800_000 });
  const [sr, cr] = await Promise.all([guestResult(server, 1_800_000), guestResult(client, 1_800_000)]);
  assert.equal(sr.received, cr.sent, `${B} → ${A}`);
  assert.equal(cr.received, sr.sent, `${A} → ${B}`);
  const st = await host!.status();
  assert.ok(
    st.pools.some((p) => (p.memberA === a && p.memberB === b) || (p.memberA === b && p.memberB === a)),
    'a pair pool of both domains exists',
  );
  t.diagnostic(`server: ${mbps(sr)}; client: ${mbps(cr)}`);
});

test('libvirtd restarted under kvmchand: it reconnects, keeps serving, and new vchans work', { skip, timeout: 900_000 }, async (t) => {
  if (!env!.owned) return t.skip('libvirtd was not started by this test');
  const before = host!.logLines().filter((l) => l.msg === 'libvirt connected').length;
  await env!.restartLibvirtd();
  await waitFor(() => host!.logLines().filter((l) => l.msg === 'libvirt connected').length > before, 60_000, 'reconnect', 100);
  const st = await host!.status();
  assert.ok(
    st.domains.some((d) => d.name === A && d.domain === ids.get(A)),
    'still served with the same id',
  );
  const BYTES = 4 * MiB;
  const h = hostPeer(['server', host!.runtimeDir, String(ids.get(A)), '101', String(BYTES)]);
  await h.ready;
  const g = vms.get(A)!.start(['node', PEER, 'client', GUEST_RUNTIME, '0', '101', String(BYTES)], { timeoutMs: 900_000 });
  const [hr, gr] = await Promise.all([h.done, guestResult(g, 900_000)]);
  assert.equal(gr.received, hr.sent);
  assert.equal(hr.received, gr.sent);
  t.diagnostic(`after the libvirtd restart: ${mbps(hr)}`);
});

test(
  '`virsh destroy` mid-stream: the host peer sees the end; the domain, its pools and its directory are gone',
  { skip, timeout: 900_000 },
  async (t) => {
    const b = ids.get(B)!;
    const s = await streamFrom(host!.runtimeDir, vms.get(B)!, b, 500);
    s.g.done.catch(() => undefined);
    try {
      await waitFor(() => s.got() >= 4 * MiB, 600_000, 'data flowing from the guest', 50);
      const t0 = performance.now();
      vms.get(B)!.kill();
      const e = await s.end;
      t.diagnostic(`host saw ${e.how} ${(e.at - t0).toFixed(0)} ms after virsh destroy, ${e.bytes} bytes read`);
    } finally {
      s.v.close();
    }
    await waitFor(() => host!.logLines().some((l) => l.msg === 'domain removed' && l.domain === b), 60_000, 'domain removed', 100);
    const st = await host!.status();
    assert.ok(!st.domains.some((d) => d.domain === b), 'the domain is gone from kvmchand');
    assert.ok(!st.pools.some((p) => p.memberA === b || p.memberB === b), 'its pools are released');
    await waitFor(() => !fs.existsSync(path.join(host!.runtimeDir, DOMAINS_DIR, String(b))), 30_000, 'its directory removed', 100);
    assert.equal(vms.get(B)!.state(), 'shut off', 'B stays defined');
    await waitFor(() => count('boot control device listening', B) === 2, 30_000, "B's boot device listening again", 100);
  },
);

/** `vm`'s guest daemon sessions so far (it logs each attach to a host session). */
function sessions(name: string): number {
  return daemons
    .get(name)!
    .stdout()
    .split('\n')
    .filter((l) => l.includes('"msg":"attached to the host"')).length;
}

async function vchanRound(name: string, port: number): Promise<string> {
  const BYTES = 4 * MiB;
  const h = hostPeer(['server', host!.runtimeDir, String(ids.get(name)), String(port), String(BYTES)]);
  await h.ready;
  const g = vms.get(name)!.start(['node', PEER, 'client', GUEST_RUNTIME, '0', String(port), String(BYTES)], { timeoutMs: 900_000 });
  const [hr, gr] = await Promise.all([h.done, guestResult(g, 900_000)]);
  assert.equal(gr.received, hr.sent, `${name}: host → guest`);
  assert.equal(hr.received, gr.sent, `${name}: guest → host`);
  return mbps(hr);
}

test(
  'kvmchand restarted with the domains up: A is adopted with its stored fds and its guest daemon follows; B boots again on its declared device; both work',
  { skip, timeout: 1_800_000 },
  async (t) => {
    const a = ids.get(A)!;
    await waitFor(
      () => {
        sm!.drain();
        return sm!.names.some((n) => n.endsWith('/ctl/shm')) && sm!.names.some((n) => /\/pool\d+u\d+\/shm$/.test(n));
      },
      30_000,
      "A's control device and pool stored",
    );
    const before = sessions(A);
    const xml = env!.virsh('dumpxml', A);
    await host!.stop();
    await host!.startManaged(sm!, config());
    await waitFor(() => count('libvirt domain adopted from stored fds', A) > 0, 60_000, 'A adopted', 100);
    assert.equal(await host!.waitDomain(A, 120_000), a, 'A keeps its id');
    await waitFor(() => sessions(A) > before, 120_000, "A's guest daemon in the new session", 200);
    assert.equal(env!.virsh('dumpxml', A).split('<shmem ').length, xml.split('<shmem ').length, 'nothing attached to or detached from A');
    const ra = await vchanRound(A, 102);
    // B boots on the device the new daemon listens on.
    const vm = vms.get(B)!;
    await vm.restart();
    assert.equal(await host!.waitDomain(B, 300_000), ids.get(B), 'B keeps its id');
    daemons.set(B, await startGuestDaemon(vm));
    const rb = await vchanRound(B, 103);
    const st = await host!.status();
    t.diagnostic(`after the restart: ${st.domains.map((d) => `${d.domain}:${d.name}`).join(' ')}; A ${ra}; B ${rb}`);
  },
);

test(
  'kvmchand restarted without its stored fds: A (hot-plugged devices) is refused as stale and keeps running',
  { skip, timeout: 900_000 },
  async () => {
    const a = ids.get(A)!;
    await host!.stop();
    // A service manager that kept nothing (a stop, not a restart, on systemd < 254).
    sm!.close();
    sm = new FakeServiceManager(host!.dir);
    const staleBefore = host!.logLines().filter((l) => l.code === 'KVMCHAN_E_VMM_STALE').length;
    await host!.startManaged(sm, config());
    await waitFor(() => host!.logLines().filter((l) => l.code === 'KVMCHAN_E_VMM_STALE').length > staleBefore, 60_000, 'A refused', 100);
    const st = await host!.status();
    assert.ok(!st.domains.some((d) => d.domain === a), 'the stale domain is not served');
    assert.equal(vms.get(A)!.state(), 'running', 'A keeps running');
    await vms.get(A)!.execOk('true');
  },
);

test("QEMU as libvirt's unprivileged user reaches its sockets; another local user cannot", { skip, timeout: 900_000 }, async (t) => {
  if (!env!.owned) return t.skip('libvirtd was not started by this test: cannot change the QEMU user');
  const name = 'kvmchan-test-u';
  await env!.useQemuUser('libvirt-qemu');
  await waitFor(() => host!.running && host!.log().split('libvirt connected').length > 2, 60_000, 'reconnect', 100);
  const xml = path.join(host!.dir, 'u.xml');
  fs.writeFileSync(xml, osLessDomainXml(name, { ports: 4, reserved: 2 }));
  env!.virsh('create', xml);
  try {
    const id = await host!.waitDomain(name, 120_000);
    const qemu = Number(fs.readFileSync(`/run/libvirt/qemu/${name}.pid`, 'utf8').trim());
    const uid = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${qemu}/status`, 'utf8'))![1];
    assert.equal(uid, '64055', 'QEMU runs as libvirt-qemu');
    const dir = path.join(host!.runtimeDir, DOMAINS_DIR, String(id));
    const st = fs.statSync(dir);
    t.diagnostic(`${dir}: mode ${(st.mode & 0o7777).toString(8)} uid ${st.uid} gid ${st.gid}`);
    assert.equal(st.gid, 64055, "the domain's directory belongs to QEMU's group");
    assert.equal(st.mode & 0o7777, 0o2710);
    // QEMU connected to both sockets: the pool has its member (waitDomain) and the control device attached.
    const live = env!.virsh('dumpxml', name);
    assert.match(live, /<shmem name='kvmchan-ctl'>/);
    // Another user is stopped at the directory, whatever the socket's own mode.
    const sock = path.join(dir, 'control.sock');
    const probe = spawnSync(
      process.execPath,
      [
        '-e',
        `const s=require('net').connect(${JSON.stringify(sock)});s.on('connect',()=>{console.log('CONNECTED');process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(0)})`,
      ],
      { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: '/' },
    );
    assert.equal(probe.stdout.trim(), 'EACCES', `uid ${NOBODY} connecting to ${sock}: ${probe.stdout}${probe.stderr}`);
  } finally {
    spawnSync('virsh', ['-c', 'qemu:///system', 'destroy', name], { stdio: 'ignore' });
  }
});
