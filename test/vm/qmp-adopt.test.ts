// VM tier, QMP backend (docs/vms-qmp.md "Restarts"): kvmchand runs under a fake service manager
// (test/helpers/fake-service-manager.ts) that keeps the fds it stores. SIGKILLed (a crash) and
// later SIGTERMed, it is started again with those fds: the running VM is adopted with the same
// domain id, the guest daemon notices the new session by itself (the session word) and serves
// again, and a new host ↔ guest vchan moves 4 MiB each way with SHA-256 on both ends. When the
// VM stops, its stored fds are removed and the daemon's fds go back down.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { teardown } from '../helpers/daemon-fixture.js';
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
  startGuestDaemon,
  waitFor,
} from '../helpers/qmp-vm.js';
import { FakeServiceManager, stopDaemon } from '../helpers/fake-service-manager.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const NAME = 'guest-adopt';

let host: QmpHost | null = null;
let sm: FakeServiceManager | null = null;
let daemon: ChildProcess | null = null;
let vm: TestVm | null = null;
let guestDaemon: GuestProcess | null = null;
let domain = -1;

async function startHost(): Promise<void> {
  daemon = await sm!.startDaemon({
    runtimeDir: host!.runtimeDir,
    args: ['-c', host!.configFile],
    logFile: host!.logFile,
    startTimeoutMs: 60_000,
  });
}

const fdsOf = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length;

before(async () => {
  if ('reason' in pre) return;
  host = new QmpHost();
  sm = new FakeServiceManager(host.dir);
  fs.writeFileSync(host.configFile, JSON.stringify({ vms: [{ name: NAME, qmp: host.qmpLink(NAME) }], qmp: { retryMs: 200 } }));
  await startHost();
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
    async () => (daemon !== null ? stopDaemon(daemon, 'SIGKILL') : undefined),
    () => {
      sm?.close();
      return undefined;
    },
    async () => host?.close(),
  );
});

async function vchanRound(port: number): Promise<string> {
  const BYTES = 4 * MiB;
  const h = hostPeer(['server', host!.runtimeDir, String(domain), String(port), String(BYTES)]);
  await h.ready;
  const g = vm!.start(['node', PEER, 'client', GUEST_RUNTIME, '0', String(port), String(BYTES)], { timeoutMs: 600_000 });
  const [hr, gr] = await Promise.all([h.done, guestResult(g, 600_000)]);
  assert.equal(hr.sent, expectedHash(1, BYTES));
  assert.equal(gr.sent, expectedHash(2, BYTES));
  assert.equal(gr.received, hr.sent, 'host → guest');
  assert.equal(hr.received, gr.sent, 'guest → host');
  return hr.received;
}

test(
  'kvmchand SIGKILLed, then SIGTERMed, and restarted with its stored fds adopts the running VM; the guest daemon follows; new vchans work',
  { skip, timeout: 1_800_000 },
  async (t) => {
    await vchanRound(200);
    await waitFor(
      () => {
        sm!.drain();
        return sm!.names.some((n) => n.endsWith('/ctl/shm')) && sm!.names.some((n) => /\/pool\d+u\d+\/shm$/.test(n));
      },
      30_000,
      'control device and pool stored',
    );
    const stored = sm!.names;
    let port = 201;
    for (const how of ['SIGKILL', 'SIGTERM'] as const) {
      const sessions = guestDaemon!
        .stdout()
        .split('\n')
        .filter((l) => l.includes('"msg":"attached to the host"')).length;
      await stopDaemon(daemon!, how);
      sm!.drain();
      assert.deepEqual(sm!.names, stored, `${how}: the store is kept`);
      const t0 = performance.now();
      await startHost();
      await waitFor(() => host!.log().includes('VM adopted from stored fds'), 60_000, `${how}: adoption`, 100);
      assert.equal(await host!.waitDomain(NAME), domain, `${how}: the same domain id`);
      await waitFor(
        () =>
          guestDaemon!
            .stdout()
            .split('\n')
            .filter((l) => l.includes('"msg":"attached to the host"')).length > sessions,
        120_000,
        `${how}: the guest daemon in the new session`,
        200,
      );
      const attachedMs = performance.now() - t0;
      const hash = await vchanRound(port++);
      t.diagnostic(
        `${how}: restart to guest attached ${attachedMs.toFixed(0)} ms; 4 MiB each way ok (${hash.slice(0, 12)}…); daemon fds ${fdsOf(daemon!.pid!)}`,
      );
      sm!.drain();
      assert.deepEqual(sm!.names, stored, `${how}: nothing stored twice`);
    }
    // The VM stops: its domain goes, and everything stored for it.
    const serving = fdsOf(daemon!.pid!);
    await guestDaemon!.kill('SIGKILL');
    guestDaemon = null;
    await vm!.shutdown();
    await waitFor(
      () => {
        sm!.drain();
        return sm!.names.length === 0;
      },
      60_000,
      'the store emptied',
      100,
    );
    await waitFor(() => host!.log().includes('"msg":"domain removed"'), 30_000, 'domain removed', 100);
    const after = fdsOf(daemon!.pid!);
    t.diagnostic(`daemon fds: ${serving} serving the adopted VM, ${after} after it stopped`);
    assert.ok(after < serving - 100, 'the devices’ fds are released');
  },
);
