// VM tier (issue 9 §3), host side served by kvmchand's QMP backend (docs/vms-qmp.md): one real
// TCG guest, booted with a second QMP monitor; only once the guest is up does the host daemon
// find that monitor, adopt the VM and hot-plug the control device and pools into it. The guest's
// `kvmchand --guest` picks them up over VFIO. The tests share the guest and run in order:
// full-duplex bulk data, many vchans at once (more than one pool), a guest app and the guest
// daemon SIGKILLed, QEMU SIGKILLed mid-stream, and a kvmchand restart while the VM runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { settledFds, teardown } from '../helpers/daemon-fixture.js';
import { vmPrerequisites, type GuestProcess, type TestVm } from '../helpers/vm.js';
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
  waitFor,
} from '../helpers/qmp-vm.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const NAME = 'guest-a';

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

test('kvmchand (QMP backend) hot-plugs the control device and pool into the running guest; the guest daemon attaches over VFIO', { skip }, async (t) => {
  const ready = guestDaemon!.stdout().split('\n').find((l) => l.includes('"msg":"kvmchand ready"')) ?? '';
  assert.match(ready, new RegExp(`"domain":${domain}\\b`));
  assert.match(ready, /"devices":"vfio"/);
  assert.ok(baseline !== null && baseline.size > 0);
  const plugged = host!.logLines().filter((l) => typeof l.msg === 'string' && /plug/i.test(l.msg));
  t.diagnostic(`domain ${domain}; boot ${vm!.bootMs.toFixed(0)} ms; host log: ${plugged.map((l) => JSON.stringify(l)).join('\n')}`);
  const peripherals = await vm!.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' });
  const names = peripherals.map((p) => p.name);
  assert.ok(names.includes('kvmchan-ctl'), `kvmchan-ctl plugged: ${names.join(' ')}`);
  assert.ok(names.some((n) => n.startsWith('kvmchan-pool-')), `a pool plugged: ${names.join(' ')}`);
});

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
