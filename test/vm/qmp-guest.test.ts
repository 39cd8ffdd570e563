// VM tier (issue 9 §3), host side served by kvmchand's QMP backend (docs/vms-qmp.md): one real
// TCG guest, booted with a second QMP monitor; only once the guest is up does the host daemon
// find that monitor, adopt the VM and hot-plug the control device and pools into it. The guest's
// `kvmchand --guest` picks them up over VFIO. The tests share the guest and run in order:
// full-duplex bulk data, many vchans at once (more than one pool), a guest app and the guest
// daemon SIGKILLed, QEMU SIGKILLed mid-stream, and a kvmchand restart while the VM runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Vchan } from '../../src/client/index.js';
import { settledFds, expectFdsBackTo, teardown } from '../helpers/daemon-fixture.js';
import { Pattern } from '../helpers/pattern.js';
import { REPO_ROOT, vmPrerequisites, type GuestProcess, type TestVm } from '../helpers/vm.js';
import {
  GUEST_RUNTIME,
  MiB,
  PEER,
  QmpHost,
  bootForQmp,
  expectedHash,
  guestResult,
  hostPeer,
  mbps,
  startGuestDaemon,
  streamFrom,
  waitFor,
} from '../helpers/qmp-vm.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const NAME = 'guest-a';
const ECHO = path.join(REPO_ROOT, 'dist', 'test', 'vm', 'guest', 'echo-servers.js');

let host: QmpHost | null = null;
let vm: TestVm | null = null;
let guestDaemon: GuestProcess | null = null;
let domain = -1;
/** The host daemon's fds while it waits for the VM (before anything was plugged). */
let baseline: Map<string, string> | null = null;

function config(): Record<string, unknown> {
  return { vms: [{ name: NAME, qmp: host!.qmpLink(NAME) }], qmp: { retryMs: 200 } };
}

before(async () => {
  if ('reason' in pre) return;
  host = new QmpHost();
  const d = await host.start(config());
  await waitFor(() => host!.log().includes('no QEMU on the QMP socket yet'), 10_000, 'the daemon waiting for QEMU');
  baseline = await settledFds(d.pid);
  vm = await bootForQmp(host.qmpLink(NAME), { qemu: pre.qemu, image: pre.image, rootPorts: 6 });
  domain = await host.waitDomain(NAME);
  guestDaemon = await startGuestDaemon(vm);
});

after(async () => {
  await teardown(
    async () => {
      if (guestDaemon !== null && vm?.exit === null) await guestDaemon.kill('SIGKILL');
    },
    async () => vm?.shutdown(),
    async () => host?.close(),
  );
});

test(
  'kvmchand (QMP backend) hot-plugs the control device and pool into the running guest; the guest daemon attaches over VFIO',
  { skip },
  async (t) => {
    const ready =
      guestDaemon!
        .stdout()
        .split('\n')
        .find((l) => l.includes('"msg":"kvmchand ready"')) ?? '';
    assert.match(ready, new RegExp(`"domain":${domain}\\b`));
    assert.match(ready, /"devices":"vfio"/);
    assert.ok(baseline !== null && baseline.size > 0);
    const plugged = host!.logLines().filter((l) => typeof l.msg === 'string' && /plug/i.test(l.msg));
    t.diagnostic(`domain ${domain}; boot ${vm!.bootMs.toFixed(0)} ms; host log: ${plugged.map((l) => JSON.stringify(l)).join('\n')}`);
    const peripherals = await vm!.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' });
    const names = peripherals.map((p) => p.name);
    assert.ok(names.includes('kvmchan-ctl'), `kvmchan-ctl plugged: ${names.join(' ')}`);
    assert.ok(
      names.some((n) => n.startsWith('kvmchan-pool-')),
      `a pool plugged: ${names.join(' ')}`,
    );
  },
);

test('host ↔ guest, both directions at once: 64 MiB each way, SHA-256 on both ends', { skip, timeout: 1_800_000 }, async (t) => {
  const BYTES = 64 * MiB;
  const h = hostPeer(['server', host!.runtimeDir, String(domain), '100', String(BYTES)]);
  await h.ready;
  const g = vm!.start(['node', PEER, 'client', GUEST_RUNTIME, '0', '100', String(BYTES)], { timeoutMs: 1_800_000 });
  const [hr, gr] = await Promise.all([h.done, guestResult(g, 1_800_000)]);
  assert.equal(hr.sent, expectedHash(1, BYTES));
  assert.equal(gr.sent, expectedHash(2, BYTES));
  assert.equal(gr.received, hr.sent, 'host → guest');
  assert.equal(hr.received, gr.sent, 'guest → host');
  t.diagnostic(`host side: ${mbps(hr)}; guest side: ${mbps(gr)}`);
});

const MANY = 100;

test(
  `${MANY} vchans host ↔ guest at once, all echoing; demand beyond the first pool hot-plugs a second one, which the guest attaches and uses`,
  { skip, timeout: 1_200_000 },
  async (t) => {
    const g = vm!.start(['node', ECHO, GUEST_RUNTIME, '0', '1000', String(MANY)], { timeoutMs: 1_200_000 });
    const t0 = performance.now();
    await g.waitForOutput(/^READY /m, 900_000);
    const listenMs = performance.now() - t0;
    const vchans: Vchan[] = [];
    try {
      for (let i = 0; i < MANY; i += 10) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(10, MANY - i) }, (_, j) =>
            Vchan.connect({ runtimeDir: host!.runtimeDir, domain, port: 1000 + i + j, timeout: 120_000 }),
          ),
        );
        vchans.push(...batch);
      }
      await Promise.all(vchans.map((v) => v.waitConnected({ timeout: 120_000 })));
      const connectMs = performance.now() - t0 - listenMs;
      // Every vchan echoes its own 4 KiB, all at once.
      await Promise.all(
        vchans.map(async (v, i) => {
          const msg = new Pattern(100 + i).slice(0, 4096);
          await v.write(msg);
          const back: Buffer[] = [];
          let n = 0;
          while (n < msg.length) {
            const b = await v.read(msg.length - n);
            if (b === null) throw new Error(`vchan ${i}: EOF after ${n} bytes`);
            back.push(b);
            n += b.length;
          }
          assert.ok(Buffer.concat(back).equals(Buffer.from(msg)), `vchan ${i} echoed its bytes`);
        }),
      );
      const st = await host!.status();
      const mine = st.vchans.filter((v) => v.serverDomain === domain && v.clientDomain === 0 && v.port >= 1000 && v.port < 1000 + MANY);
      assert.equal(mine.length, MANY, 'the host daemon lists every vchan');
      const pools = st.pools.filter((p) => p.memberA === domain || p.memberB === domain);
      t.diagnostic(
        `listen ${listenMs.toFixed(0)} ms, connect ${connectMs.toFixed(0)} ms, echo done at ${(performance.now() - t0).toFixed(0)} ms; pools: ${JSON.stringify(pools)}`,
      );
      const used = pools.filter((p) => p.vchans > 0 && (p.joined & (p.memberA === domain ? 1 : 2)) !== 0);
      assert.ok(used.length >= 2, `vchans spread over at least two attached pools: ${JSON.stringify(pools)}`);
      const attached = guestDaemon!
        .stdout()
        .split('\n')
        .filter((l) => l.includes('"msg":"pool attached"'));
      assert.ok(attached.length >= 2, `the guest daemon attached a hot-plugged second pool:\n${attached.join('\n')}`);
    } finally {
      for (const v of vchans) v.close();
    }
    const done = await g.waitForOutput(/^(DONE|FAILED) (.*)$/m, 300_000);
    assert.equal(done[1], 'DONE', done[2]);
  },
);

const streamFromGuest = (port: number): ReturnType<typeof streamFrom> => streamFrom(host!.runtimeDir, vm!, domain, port);

test('a guest app SIGKILLed mid-stream: the host peer drains what was sent and sees EOF', { skip, timeout: 900_000 }, async (t) => {
  const s = await streamFromGuest(300);
  try {
    await waitFor(() => s.got() >= 4 * MiB, 600_000, 'data flowing from the guest', 50);
    const before = s.got();
    await s.g.kill('SIGKILL');
    const killed = performance.now();
    const e = await s.end;
    t.diagnostic(
      `host saw "${e.how}" ${(e.at - killed).toFixed(0)} ms after the kill (from the test's side), ${e.bytes} bytes read (${before} before the kill)`,
    );
    assert.equal(e.how, 'EOF');
    assert.ok(e.bytes >= before);
    assert.ok(e.at - killed < 30_000, 'the end is seen promptly');
  } finally {
    s.v.close();
  }
});

test(
  'the guest daemon SIGKILLed: host peers see the end; a restarted guest daemon serves new vchans',
  { skip, timeout: 1_200_000 },
  async (t) => {
    const s = await streamFromGuest(400);
    try {
      await waitFor(() => s.got() >= 4 * MiB, 600_000, 'data flowing from the guest', 50);
      await guestDaemon!.kill('SIGKILL');
      const killed = performance.now();
      const e = await s.end;
      t.diagnostic(`host saw "${e.how}" ${(e.at - killed).toFixed(0)} ms after the kill, ${e.bytes} bytes read`);
      assert.ok(e.at - killed < 30_000, 'the end is seen promptly');
    } finally {
      s.v.close();
      await s.g.kill('SIGKILL');
    }
    const t0 = performance.now();
    guestDaemon = await startGuestDaemon(vm!);
    t.diagnostic(`guest daemon restarted and attached in ${(performance.now() - t0).toFixed(0)} ms`);
    const BYTES = 2 * MiB;
    const h = hostPeer(['server', host!.runtimeDir, String(domain), '401', String(BYTES)]);
    await h.ready;
    const g = vm!.start(['node', PEER, 'client', GUEST_RUNTIME, '0', '401', String(BYTES)], { timeoutMs: 900_000 });
    const [hr, gr] = await Promise.all([h.done, guestResult(g, 900_000)]);
    assert.equal(gr.received, hr.sent, 'host → guest');
    assert.equal(hr.received, gr.sent, 'guest → host');
  },
);

test(
  'QEMU SIGKILLed mid-stream: host peers see the end within seconds; the host daemon is back to its baseline fds',
  { skip, timeout: 900_000 },
  async (t) => {
    const s = await streamFromGuest(500);
    try {
      await waitFor(() => s.got() >= 4 * MiB, 600_000, 'data flowing from the guest', 50);
      vm!.child.kill('SIGKILL');
      const killed = performance.now();
      const e = await s.end;
      t.diagnostic(`host saw "${e.how}" ${(e.at - killed).toFixed(0)} ms after the kill, ${e.bytes} bytes read; state ${s.v.state}`);
      assert.ok(e.at - killed < 10_000, 'the end is seen within seconds');
    } finally {
      s.v.close();
    }
    await vm!.shutdown();
    guestDaemon = null;
    await waitFor(() => host!.logLines().some((l) => l.msg === 'domain removed' && l.domain === domain), 30_000, 'domain removed', 100);
    await expectFdsBackTo(host!.daemon!.pid, baseline!, 30_000, 'host daemon fds back to baseline');
    const st = await host!.status();
    assert.ok(!st.domains.some((d) => d.name === NAME), 'the domain is gone');
  },
);

test(
  'kvmchand restarted while the VM runs: VM refused as stale with its id kept, QEMU keeps running, devices untouched',
  { skip, timeout: 900_000 },
  async (t) => {
    // A new QEMU on the same monitor path is served again with the same domain id.
    if ('reason' in pre) return;
    vm = await bootForQmp(host!.qmpLink(NAME), { qemu: pre.qemu, image: pre.image, rootPorts: 6 });
    assert.equal(await host!.waitDomain(NAME), domain, 'same domain id after a QEMU restart');
    const before = (await vm.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' })).map((p) => p.name).sort();
    await host!.stop();
    const staleBefore = host!
      .logLines()
      .filter((l) => l.code === 'KVMCHAN_E_VMM_STALE' || (typeof l.err === 'string' && l.err.includes('earlier kvmchand'))).length;
    await host!.start(config());
    await waitFor(
      () =>
        host!
          .logLines()
          .filter((l) => l.code === 'KVMCHAN_E_VMM_STALE' || (typeof l.err === 'string' && l.err.includes('earlier kvmchand'))).length >
        staleBefore,
      60_000,
      'the stale refusal',
      100,
    );
    const st = await host!.status();
    assert.ok(!st.domains.some((d) => d.name === NAME), 'the stale VM is not served');
    const state = JSON.parse(fs.readFileSync(path.join(host!.runtimeDir, 'qmp-vms.json'), 'utf8')) as unknown;
    t.diagnostic(`state file: ${JSON.stringify(state)}`);
    assert.match(JSON.stringify(state), new RegExp(`"${NAME}"[^}]*${domain}|${domain}[^}]*"${NAME}"`), 'the id is remembered');
    assert.equal(vm.exit, null, `QEMU still runs: ${vm.qemuStderr}`);
    const status = await vm.qmp.execute<{ status: string }>('query-status');
    assert.equal(status.status, 'running');
    const after = (await vm.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' })).map((p) => p.name).sort();
    assert.deepEqual(after, before, 'the devices are unchanged');
    await vm.execOk('true');
  },
);
