// Tier 3: kvmchand's QMP VMM backend (docs/vms-qmp.md) against real, OS-less QEMU (TCG, -S):
// adoption by configuration, hot-plug of the control device and a pool onto free root ports (q35)
// or the root bus (pc), a clean refusal when no port fits, QEMU SIGKILL noticed (domain removed,
// daemon fds back to baseline), and the documented behaviour across a kvmchand restart: without a
// service manager's fd store the VM keeps running, is refused as stale with its domain id kept, and
// is served again once its QEMU restarts; with one (test/helpers/fake-service-manager.ts) it is
// adopted on its stored fds — and a manager that stops reading while they are stored holds up
// nothing (docs/operations.md, "systemd"). QEMU must survive everything kvmchand does.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import { QemuProcess, ensureQemu } from '../helpers/qemu.js';
import { E2eHost } from '../helpers/e2e-host.js';
import { stopDaemon } from '../helpers/fake-service-manager.js';
import { native } from '../../src/native.js';
import { CONTROL_SESSION_OFFSET } from '../../src/daemon/guest-link/host-link.js';
import { DEVICE_HEADER_PAGE, decodeDeviceHeader, headerOffset } from '../../src/ivshmem/device-header.js';

const found = ensureQemu();
const skip = 'reason' in found ? found.reason : false;
if (skip !== false) console.error(`\n#####\n# SKIPPING kvmchand QMP backend tests: ${skip}\n#####\n`);
const binary = 'path' in found ? found.path : '';
const MiB = 1 << 20;

const cleanups: (() => Promise<unknown> | undefined)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface StatusJson {
  domains: { domain: number; name: string; flags: number }[];
  pools: { pool: number; memberA: number; joined: number; size: number; vectors: number }[];
}
interface LogLine {
  msg?: string;
  vm?: string;
  domain?: number;
  err?: string;
  code?: string;
  device?: string;
  bus?: string;
  ms?: number;
}

class Setup extends E2eHost<StatusJson, LogLine> {
  qemu: QemuProcess | null = null;

  constructor() {
    super('kvmchan-qmp-e2e-');
    cleanups.push(() => this.close());
  }

  async startQemu(opts: { rootPorts?: number; rootPortReserve?: string; machine?: 'q35' | 'pc' } = {}): Promise<QemuProcess> {
    const qdir = path.join(this.dir, 'vm');
    fs.mkdirSync(qdir, { recursive: true });
    this.qemu = await QemuProcess.start({ binary, dir: qdir, daemonQmp: true, ...opts });
    return this.qemu;
  }

  /** The VM's kvmchand monitor (exists before QEMU starts: fixed path). */
  get vmQmp(): string {
    return path.join(this.dir, 'vm', 'vm-qmp.sock');
  }

  async startDaemon(vms: object[], extra: object = {}): Promise<PrivateDaemon> {
    return this.startWith({ vms, qmp: { retryMs: 100 }, pools: { poolSize: 64 * MiB }, ...extra });
  }

  async close(): Promise<void> {
    await this.qemu?.kill();
    await this.closeManaged();
    await this.daemon?.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function qomGet(q: QemuProcess, p: string, property: string): Promise<unknown> {
  return q.qmp.execute('qom-get', { path: p, property });
}

/** QEMU is alive and its monitor answers. */
async function assertQemuAlive(q: QemuProcess): Promise<void> {
  assert.equal(q.exit, null, `QEMU exited: ${JSON.stringify(q.exit)} ${q.stderr}`);
  const st = await q.qmp.execute<{ status: string }>('query-status');
  assert.equal(typeof st.status, 'string');
}

test(
  'q35: kvmchand adopts a configured QEMU once it runs, plugs control device and pool on free root ports; SIGKILL removes the domain and its fds',
  { skip },
  async (t) => {
    const s = new Setup();
    // The daemon starts first: the VM is "waiting" until QEMU appears on its socket.
    const d = await s.startDaemon([{ name: 'vm-a', qmp: s.vmQmp }]);
    await until(() => s.logs().some((l) => l.msg === 'no QEMU on the QMP socket yet; retrying'), 5000, 'the daemon waiting for QEMU');
    const baseline = await s.quietFds();
    const q = await s.startQemu({ rootPorts: 3, rootPortReserve: '512M' });
    await until(() => s.status().domains.some((x) => x.name === 'vm-a'), 10_000, 'domain vm-a');
    const dom = s.status().domains.find((x) => x.name === 'vm-a')!;
    assert.equal(dom.domain, 1, 'first VM gets domain id 1');
    assert.equal(dom.flags & 2, 0, 'no CONTROL_UP: no guest daemon runs in an OS-less VM');
    assert.notEqual(s.status().domains[0]!.flags & 2, 0, 'CONTROL_UP for dom0');
    await until(() => s.status().pools.some((p) => p.memberA === dom.domain && p.joined === 1), 10_000, 'the pool member attached');
    // The daemon opened the control channel to the VM's control device.
    await until(
      () => s.logs().some((l) => l.msg === 'guest control channel offered' && l.domain === dom.domain),
      5000,
      'control channel offered',
    );

    // Both devices are realized, each alone on its own root port.
    const pool = s.status().pools.find((p) => p.memberA === dom.domain)!;
    const ctlBus = await qomGet(q, '/machine/peripheral/kvmchan-ctl', 'parent_bus');
    const poolBus = await qomGet(q, `/machine/peripheral/kvmchan-pool-${pool.pool}`, 'parent_bus');
    assert.match(String(ctlBus), /^\/machine\/peripheral\/rp\d\/rp\d$/);
    assert.match(String(poolBus), /^\/machine\/peripheral\/rp\d\/rp\d$/);
    assert.notEqual(ctlBus, poolBus);
    assert.equal(await qomGet(q, '/machine/peripheral/kvmchan-ctl', 'realized'), true);
    assert.equal(await qomGet(q, '/machine/peripheral/kvmchan-ctl/ivshmem.bar2[0]', 'size'), 256 * 1024);
    assert.equal(await qomGet(q, `/machine/peripheral/kvmchan-pool-${pool.pool}/ivshmem.bar2[0]`, 'size'), 64 * MiB);
    assert.equal(await qomGet(q, `/machine/peripheral/kvmchan-pool-${pool.pool}`, 'vectors'), pool.vectors);
    assert.equal(await qomGet(q, `/machine/peripheral/kvmchan-pool-${pool.pool}`, 'ioeventfd'), true);
    const plugs = s.logs().filter((l) => l.msg === 'device hot-plugged');
    t.diagnostic(
      `hot-plugs: ${plugs.map((l) => `${l.device} on ${l.bus} in ${l.ms} ms`).join(', ')}; daemon fds: baseline ${baseline}, serving ${s.daemonFds()}`,
    );
    await assertQemuAlive(q);

    // QEMU dies: domain removed, every fd back.
    await q.kill();
    s.qemu = null;
    await until(() => !s.status().domains.some((x) => x.name === 'vm-a'), 5000, 'domain removed');
    await until(() => s.status().pools.length === 0, 5000, 'pools released');
    await until(() => s.daemonFds() <= baseline, 5000, `daemon fds back to ${baseline}`);
    assert.ok(s.logs().some((l) => l.msg === 'VM gone' && l.vm === 'vm-a'));
    assert.equal(d.child.exitCode, null, 'the daemon lives on');
  },
);

test('q35: no fitting root port is refused cleanly, naming the fix; nothing is plugged; QEMU lives', { skip }, async () => {
  const s = new Setup();
  // Ports without pref64-reserve: fine for the control device, not for a 64 MiB pool.
  const q = await s.startQemu({ rootPorts: 2 });
  await s.startDaemon([{ name: 'vm-small', qmp: s.vmQmp }]);
  await until(() => s.logs().some((l) => l.msg === 'cannot serve VM' && l.vm === 'vm-small'), 10_000, 'refusal');
  const line = s.logs().find((l) => l.msg === 'cannot serve VM')!;
  assert.equal(line.code, 'KVMCHAN_E_VMM_NO_PORT');
  assert.match(line.err!, /no free PCIe root port for its first pool/);
  assert.match(line.err!, /-device pcie-root-port,id=rpN,chassis=N,slot=N,pref64-reserve=128M/);
  const peripherals = await q.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' });
  assert.deepEqual(
    peripherals.map((e) => e.name).filter((n) => n.startsWith('kvmchan')),
    [],
  );
  assert.deepEqual(
    s.status().domains.map((x) => x.domain),
    [0],
  );
  await assertQemuAlive(q);
});

test('q35: one free root port only (it fits a pool) is refused: the control device needs a second', { skip }, async () => {
  const s = new Setup();
  const q = await s.startQemu({ rootPorts: 1, rootPortReserve: '512M' });
  await s.startDaemon([{ name: 'vm-one', qmp: s.vmQmp }]);
  await until(() => s.logs().some((l) => l.msg === 'cannot serve VM'), 10_000, 'refusal');
  const line = s.logs().find((l) => l.msg === 'cannot serve VM')!;
  assert.equal(line.code, 'KVMCHAN_E_VMM_NO_PORT');
  assert.match(line.err!, /control device/);
  await assertQemuAlive(q);
});

test('pc (i440fx): devices go on the hot-pluggable root bus', { skip }, async () => {
  const s = new Setup();
  const q = await s.startQemu({ machine: 'pc' });
  await s.startDaemon([{ name: 'vm-pc', qmp: s.vmQmp, id: 7 }]);
  await until(() => s.status().pools.some((p) => p.memberA === 7 && p.joined === 1), 10_000, 'pool attached');
  assert.equal(s.status().domains.find((x) => x.domain === 7)?.name, 'vm-pc', 'the configured id is used');
  const pool = s.status().pools.find((p) => p.memberA === 7)!;
  assert.equal(await qomGet(q, '/machine/peripheral/kvmchan-ctl', 'parent_bus'), '/machine/i440fx/pci.0');
  assert.equal(await qomGet(q, `/machine/peripheral/kvmchan-pool-${pool.pool}`, 'parent_bus'), '/machine/i440fx/pci.0');
  await assertQemuAlive(q);
});

test(
  'kvmchand restart while QEMU runs: QEMU survives, the VM keeps its id but is refused as stale until its QEMU restarts',
  { skip },
  async (t) => {
    const s = new Setup();
    const q = await s.startQemu({ rootPorts: 4, rootPortReserve: '512M' });
    await s.startDaemon([{ name: 'vm-r', qmp: s.vmQmp }]);
    await until(() => s.status().pools.some((p) => p.joined === 1), 10_000, 'pool attached');
    const id = s.status().domains.find((x) => x.name === 'vm-r')!.domain;

    // SIGKILL: QEMU's chardevs see EOF; nothing is unplugged; QEMU keeps running.
    await s.daemon!.kill();
    await new Promise((r) => setTimeout(r, 500));
    await assertQemuAlive(q);
    const peripherals = async (): Promise<string[]> =>
      (await q.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' }))
        .map((e) => e.name)
        .filter((n) => n.startsWith('kvmchan'))
        .sort();
    const plugged = await peripherals();
    assert.equal(plugged.length, 2, 'control device and pool still plugged');

    // A new daemon on the same runtime directory: same id, refused as stale, QEMU untouched.
    fs.writeFileSync(s.logFile, '');
    await s.startDaemon([{ name: 'vm-r', qmp: s.vmQmp }]);
    await until(() => s.logs().some((l) => l.msg === 'cannot serve VM'), 10_000, 'stale refusal');
    const line = s.logs().find((l) => l.msg === 'cannot serve VM')!;
    assert.equal(line.code, 'KVMCHAN_E_VMM_STALE');
    assert.equal(line.domain, id, 'the domain id is kept across the restart');
    assert.match(line.err!, /restarts/);
    assert.deepEqual(await peripherals(), plugged, 'nothing unplugged or added');
    await new Promise((r) => setTimeout(r, 500));
    await assertQemuAlive(q);

    // SIGTERM of that daemon: still nothing touches the VM.
    await s.daemon!.stop();
    await assertQemuAlive(q);

    // The VM's QEMU restarts (same socket): the running daemon serves it again, same id.
    fs.writeFileSync(s.logFile, '');
    await s.startDaemon([{ name: 'vm-r', qmp: s.vmQmp }]);
    await until(() => s.logs().some((l) => l.msg === 'cannot serve VM'), 10_000, 'stale refusal again');
    await q.kill();
    const q2 = await s.startQemu({ rootPorts: 4, rootPortReserve: '512M' });
    await until(() => s.status().pools.some((p) => p.memberA === id && p.joined === 1), 10_000, 'served again');
    assert.equal(s.status().domains.find((x) => x.name === 'vm-r')?.domain, id);
    t.diagnostic(`domain id ${id} kept across two daemon restarts and a QEMU restart`);
    await assertQemuAlive(q2);
  },
);

/** The session word and the device key of a stored control device (the test's copy of the memfd). */
function controlState(fd: number): { session: number; key: string } {
  const size = fs.fstatSync(fd).size;
  const m = native.mmap(fd, size, 0, false);
  try {
    const session = new Uint32Array(m, CONTROL_SESSION_OFFSET, 1)[0]!;
    const h = decodeDeviceHeader(new Uint8Array(m.slice(headerOffset(size), headerOffset(size) + DEVICE_HEADER_PAGE)));
    return { session, key: h.key!.toString('hex') };
  } finally {
    native.munmap(m);
  }
}

test(
  'fd store: kvmchand restarted under a running QEMU (SIGKILL, then SIGTERM) adopts the VM with its stored fds; QEMU gone removes them',
  { skip },
  async (t) => {
    const s = new Setup();
    const { sm, start } = s.managed({ vms: [{ name: 'vm-f', qmp: s.vmQmp }], qmp: { retryMs: 100 }, pools: { poolSize: 64 * MiB } });
    const fdsOf = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length;
    // The daemon sends one datagram per fd; our socket queues only net.unix.max_dgram_qlen of
    // them (systemd raises that) and the rest wait in the daemon until the socket is read
    // (docs/operations.md, "systemd"): a synchronous `kvmchan status` is answered meanwhile, but
    // the store is only complete once the socket was read — so wait by reading it.
    const VECTORS = 64;
    const drained = (n: number) => () => {
      sm.drain();
      return sm.names.length === n;
    };
    const q = await s.startQemu({ rootPorts: 4, rootPortReserve: '512M' });
    let child = await start();
    const total = 3 + 1 + 2 * VECTORS;
    await until(drained(total), 20_000, 'the devices stored');
    await until(() => s.status().pools.some((p) => p.joined === 1), 10_000, 'pool attached');
    const id = s.status().domains.find((x) => x.name === 'vm-f')!.domain;
    const pool = s.status().pools.find((p) => p.memberA === id)!;
    assert.equal(pool.vectors, VECTORS);
    const uid = process.geteuid!();
    const expected = [
      'kvmchan/qmp/vm-f/ctl/shm',
      'kvmchan/qmp/vm-f/ctl/p0v0',
      'kvmchan/qmp/vm-f/ctl/p1v0',
      `kvmchan/qmp/vm-f/pool${pool.pool}u${uid}/shm`,
      ...[0, 1].flatMap((p) => Array.from({ length: pool.vectors }, (_, v) => `kvmchan/qmp/vm-f/pool${pool.pool}u${uid}/p${p}v${v}`)),
    ].sort();
    assert.deepEqual(sm.names, expected, 'one fd per name: control device and pool, shm and both peers’ vectors');
    const ctl = () => controlState(sm.store.find((e) => e.name === 'kvmchan/qmp/vm-f/ctl/shm')!.fd);
    const first = ctl();
    assert.equal(first.session, 1, 'the first session');
    const peripherals = async (): Promise<string[]> =>
      (await q.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' }))
        .map((e) => e.name)
        .filter((n) => n.startsWith('kvmchan'))
        .sort();
    const plugged = await peripherals();

    for (const how of ['SIGKILL', 'SIGTERM'] as const) {
      await stopDaemon(child, how);
      sm.drain();
      assert.deepEqual(sm.names, expected, `${how}: nothing removed from the store`);
      await assertQemuAlive(q);
      fs.writeFileSync(s.logFile, '');
      const before = ctl().session;
      child = await start();
      await until(() => s.logs().some((l) => l.msg === 'VM adopted from stored fds'), 10_000, `${how}: adoption`);
      await until(() => s.status().pools.some((p) => p.pool === pool.pool && p.joined === 1), 10_000, `${how}: pool adopted`);
      assert.equal(s.status().domains.find((x) => x.name === 'vm-f')?.domain, id, `${how}: same domain id`);
      assert.deepEqual(
        s
          .status()
          .pools.filter((p) => p.memberA === id)
          .map((p) => p.pool),
        [pool.pool],
        `${how}: the same pool, no new one`,
      );
      assert.deepEqual(await peripherals(), plugged, `${how}: nothing plugged or unplugged`);
      await until(() => ctl().session === before + 1, 5000, `${how}: a new session offered`);
      assert.equal(ctl().key, first.key, `${how}: the device key is kept (the guest found its pools with it)`);
      sm.drain();
      assert.deepEqual(sm.names, expected, `${how}: the store unchanged (no fd stored twice)`);
      assert.ok(!s.logs().some((l) => l.msg === 'device hot-plugged'), `${how}: no hot-plug`);
      t.diagnostic(`${how}: adopted domain ${id}, pool ${pool.pool}, session ${ctl().session}; daemon fds ${fdsOf(child.pid!)}`);
      await assertQemuAlive(q);
    }

    // The VM goes: its domain is removed and so is everything stored for it.
    const served = fdsOf(child.pid!);
    await q.kill();
    await until(drained(0), 20_000, 'the store emptied');
    await until(() => !s.status().domains.some((x) => x.name === 'vm-f'), 10_000, 'domain removed');
    const after = fdsOf(child.pid!);
    const devicesFds = 3 + 1 + 2 * pool.vectors;
    assert.ok(after <= served - devicesFds, `daemon fds: ${served} serving, ${after} after the VM went (${devicesFds} device fds)`);
    t.diagnostic(`daemon fds: ${served} serving the adopted VM, ${after} after it went`);
    await stopDaemon(child);
  },
);

test(
  'fd store: a service manager that stops reading while QEMU gets its devices stalls nothing; every fd arrives once, in order',
  { skip },
  async (t) => {
    const s = new Setup();
    const { sm, start } = s.managed({ vms: [{ name: 'vm-b', qmp: s.vmQmp }], qmp: { retryMs: 100 }, pools: { poolSize: 64 * MiB } });
    const fdsOf = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length;
    // The manager's queue is full before kvmchand starts: every FDSTORE=1 of the VM's devices
    // (and READY=1) finds no room.
    sm.pause({ fill: true });
    const q = await s.startQemu({ rootPorts: 4, rootPortReserve: '512M' });
    const child = await start();
    // Served meanwhile: the status (a synchronous client) answers, the devices are hot-plugged.
    await until(() => s.status().pools.some((p) => p.joined === 1), 20_000, 'pool attached while the manager is not reading');
    const id = s.status().domains.find((x) => x.name === 'vm-b')!.domain;
    const pool = s.status().pools.find((p) => p.memberA === id)!;
    const total = 3 + 1 + 2 * pool.vectors;
    assert.ok(
      s.logs().some((l) => l.msg?.includes('not reading its notification socket') === true),
      'the backlog is logged',
    );
    assert.equal(sm.store.length, 0, 'the manager has read nothing yet');
    const backlogged = fdsOf(child.pid!);

    sm.resume();
    await until(
      () => {
        sm.drain();
        return sm.store.length >= total && sm.notifications.some((m) => m.includes('READY=1'));
      },
      30_000,
      'every fd stored and READY=1',
    );
    const uid = process.geteuid!();
    const dev = `kvmchan/qmp/vm-b/pool${pool.pool}u${uid}`;
    assert.deepEqual(
      sm.store.map((e) => e.name),
      [
        'kvmchan/qmp/vm-b/ctl/shm',
        'kvmchan/qmp/vm-b/ctl/p0v0',
        'kvmchan/qmp/vm-b/ctl/p1v0',
        `${dev}/shm`,
        ...[0, 1].flatMap((p) => Array.from({ length: pool.vectors }, (_, v) => `${dev}/p${p}v${v}`)),
      ],
      'every fd once, in the order stored',
    );
    await until(() => fdsOf(child.pid!) <= backlogged - total, 10_000, 'the duplicates that waited closed');
    t.diagnostic(`daemon fds: ${backlogged} with ${total} notifications waiting, ${fdsOf(child.pid!)} after they went`);
    await assertQemuAlive(q);
    await stopDaemon(child);
  },
);
