// Tier 3: kvmchand's libvirt VMM backend (docs/vms-libvirt.md) against a real libvirtd
// (test/helpers/libvirt.ts) and OS-less TCG q35 domains: a domain started under kvmchand is
// served (control device attached on a free pcie-root-port, visible in the live XML; status
// shows the libvirt name), its first pool attached on a port with pref64-reserve; `virsh
// destroy` removes the domain and the daemon's fds return to baseline; a kvmchand restart with
// the domain running refuses it as stale (same id) until it restarts, unless the service
// manager's fd store gave back its devices' fds (then the domain is adopted as it runs, nothing
// attached); a libvirtd restart under kvmchand is survived (reconnect, re-sync, events still
// followed).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import { stopDaemon } from '../helpers/fake-service-manager.js';
import { native } from '../../src/native.js';
import { CONTROL_SESSION_OFFSET } from '../../src/daemon/guest-link/host-link.js';
import { bootControlPath } from '../../src/daemon/vmm/libvirt/libvirt-vmm.js';
import { ensureLibvirt, osLessDomainXml, type LibvirtEnv } from '../helpers/libvirt.js';
import { E2eHost } from '../helpers/e2e-host.js';

const found = await ensureLibvirt();
const skip = 'reason' in found ? found.reason : false;
if (skip !== false) console.error(`\n#####\n# SKIPPING kvmchand libvirt backend tests: ${skip}\n#####\n`);
const env = found as LibvirtEnv;
const MiB = 1 << 20;

const cleanups: (() => Promise<unknown> | undefined)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  if (skip === false) await env.stop();
});

interface StatusJson {
  domains: { domain: number; name: string; flags: number }[];
  pools: { pool: number; memberA: number; joined: number; size: number; vectors: number }[];
}
interface LogLine {
  msg?: string;
  name?: string;
  domain?: number;
  err?: string;
  code?: string;
  device?: string;
  bus?: number | string;
  ms?: number;
  connects?: number;
}

class Setup extends E2eHost<StatusJson, LogLine> {
  readonly domains: string[] = [];

  constructor() {
    super('kvmchan-libvirt-e2e-');
    cleanups.push(() => this.close());
  }

  /** Start a transient OS-less domain (fixed UUID per name, so it keeps its kvmchan id). */
  createDomain(name: string, uuid: string): void {
    const file = path.join(this.dir, `${name}.xml`);
    fs.writeFileSync(file, osLessDomainXml(name).replace('<name>', `<uuid>${uuid}</uuid>\n  <name>`));
    env.virsh('create', file);
    if (!this.domains.includes(name)) this.domains.push(name);
  }

  destroyDomain(name: string): void {
    env.virsh('destroy', name);
  }

  liveXml(name: string): string {
    return env.virsh('dumpxml', name);
  }

  state(name: string): string {
    return env.virsh('domstate', name).trim();
  }

  async startDaemon(domains: string[]): Promise<PrivateDaemon> {
    return this.startWith({ libvirt: { domains, retryMs: 100 }, pools: { poolSize: 64 * MiB } });
  }

  async close(): Promise<void> {
    for (const n of this.domains) {
      try {
        env.virsh('destroy', n);
      } catch {
        // not running
      }
    }
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

/** The `<shmem>` elements of a live XML: name → PCI bus of its address. */
function shmems(xml: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of xml.matchAll(/<shmem name='([^']+)'>([\s\S]*?)<\/shmem>/g)) {
    const bus = /<address type='pci'[^>]*bus='(0x[0-9a-f]+)'/.exec(m[2]!);
    out.set(m[1]!, bus === null ? -1 : Number(bus[1]));
  }
  return out;
}

test(
  'a domain started under kvmchand is served: control device and pool attached on root ports; destroy removes it',
  { skip },
  async (t) => {
    const s = new Setup();
    await s.startDaemon(['kvmchan-e2e-a']);
    await until(() => s.logs().some((l) => l.msg === 'libvirt connected'), 10_000, 'libvirt connected');
    await new Promise((r) => setTimeout(r, 300));
    const baseline = await s.quietFds();

    s.createDomain('kvmchan-e2e-a', '6b766d63-6861-6e00-0000-00000000000a');
    await until(() => s.status().domains.some((x) => x.name === 'kvmchan-e2e-a'), 20_000, 'domain served');
    const dom = s.status().domains.find((x) => x.name === 'kvmchan-e2e-a')!;
    assert.ok(dom.domain >= 1);
    await until(() => s.status().pools.some((p) => p.memberA === dom.domain && p.joined === 1), 20_000, 'the pool member attached');
    const pool = s.status().pools.find((p) => p.memberA === dom.domain)!;
    const live = shmems(s.liveXml('kvmchan-e2e-a'));
    // Port 1 carries libvirt's USB controller; 2 has no reserve (control device); 3 and 4 have 256 MiB.
    assert.equal(live.get('kvmchan-ctl'), 2, 'control device on the free port least fit for a pool');
    assert.equal(live.get(`kvmchan-pool-${pool.pool}`), 3, 'the pool on a port with pref64-reserve');
    assert.match(s.liveXml('kvmchan-e2e-a'), /<shmem name='kvmchan-ctl'>\s*<model type='ivshmem-doorbell'\/>/);
    const attaches = s.logs().filter((l) => l.msg === 'device attached');
    t.diagnostic(
      `attaches: ${attaches.map((l) => `${l.device} on bus ${l.bus} in ${l.ms} ms`).join(', ')}; daemon fds: baseline ${baseline}, serving ${s.daemonFds()}`,
    );

    s.destroyDomain('kvmchan-e2e-a');
    await until(() => !s.status().domains.some((x) => x.name === 'kvmchan-e2e-a'), 10_000, 'domain removed');
    await until(() => s.status().pools.length === 0, 10_000, 'pools released');
    await until(() => s.daemonFds() <= baseline, 10_000, `daemon fds back to ${baseline}`);
    assert.ok(s.logs().some((l) => l.msg === 'libvirt domain gone' && l.domain === dom.domain));
    assert.equal(s.daemon!.child.exitCode, null, 'the daemon lives on');
  },
);

test(
  'kvmchand restarted with the domain running: refused as stale with its id kept, served again after the domain restarts',
  { skip },
  async (t) => {
    const s = new Setup();
    const uuid = '6b766d63-6861-6e00-0000-00000000000b';
    s.createDomain('kvmchan-e2e-b', uuid);
    // Adoption: the domain runs before kvmchand starts.
    await s.startDaemon(['kvmchan-e2e-b']);
    await until(() => s.status().pools.some((p) => p.joined === 1), 20_000, 'adopted and pool attached');
    const id = s.status().domains.find((x) => x.name === 'kvmchan-e2e-b')!.domain;

    await s.daemon!.stop();
    assert.equal(s.state('kvmchan-e2e-b'), 'running', 'the domain survives kvmchand stopping');
    fs.writeFileSync(s.logFile, '');
    await s.startDaemon(['kvmchan-e2e-b']);
    await until(() => s.logs().some((l) => l.msg === 'cannot serve libvirt domain'), 10_000, 'stale refusal');
    const line = s.logs().find((l) => l.msg === 'cannot serve libvirt domain')!;
    assert.equal(line.code, 'KVMCHAN_E_VMM_STALE');
    assert.equal(line.domain, id, 'the domain id is kept across the restart');
    assert.ok(!s.status().domains.some((x) => x.name === 'kvmchan-e2e-b'));
    assert.equal(s.state('kvmchan-e2e-b'), 'running');

    // The domain restarts: served afresh, same id.
    s.destroyDomain('kvmchan-e2e-b');
    s.createDomain('kvmchan-e2e-b', uuid);
    await until(() => s.status().pools.some((p) => p.memberA === id && p.joined === 1), 20_000, 'served again');
    t.diagnostic(`domain id ${id} kept across a kvmchand restart and a domain restart`);
  },
);

test(
  'libvirtd restarted under kvmchand: the domain stays served; reconnect and events work again',
  { skip: skip !== false ? skip : !env.owned ? 'libvirtd not started by this test' : false },
  async (t) => {
    const s = new Setup();
    s.createDomain('kvmchan-e2e-c', '6b766d63-6861-6e00-0000-00000000000c');
    await s.startDaemon(['kvmchan-e2e-c']);
    await until(() => s.status().pools.some((p) => p.joined === 1), 20_000, 'served');
    const id = s.status().domains.find((x) => x.name === 'kvmchan-e2e-c')!.domain;

    const t0 = Date.now();
    await env.restartLibvirtd();
    await until(() => s.logs().some((l) => l.msg === 'libvirt connected' && l.connects === 2), 20_000, 'reconnected');
    t.diagnostic(`reconnected ${Date.now() - t0} ms after the libvirtd restart began`);
    assert.ok(s.logs().some((l) => l.msg === 'libvirt connection lost; domains stay served, reconnecting'));
    assert.equal(s.status().domains.find((x) => x.name === 'kvmchan-e2e-c')?.domain, id, 'still served, same id');
    assert.equal(s.state('kvmchan-e2e-c'), 'running');

    // Events flow on the new connection.
    s.destroyDomain('kvmchan-e2e-c');
    await until(() => !s.status().domains.some((x) => x.name === 'kvmchan-e2e-c'), 10_000, 'domain removed after reconnect');
  },
);

/** The session word of a stored control device (the test's copy of its memfd). */
function session(fd: number): number {
  const m = native.mmap(fd, fs.fstatSync(fd).size, 0, false);
  try {
    return new Uint32Array(m, CONTROL_SESSION_OFFSET, 1)[0]!;
  } finally {
    native.munmap(m);
  }
}

test(
  'fd store: kvmchand restarted (SIGKILL, then SIGTERM) under a running domain adopts it with its stored fds; a domain gone meanwhile has its fds dropped',
  { skip },
  async (t) => {
    const s = new Setup();
    const D = 'kvmchan-e2e-d';
    const E = 'kvmchan-e2e-e';
    const uuidD = '6b766d63-6861-6e00-0000-00000000000d';
    const { sm, start } = s.managed({ libvirt: { domains: [D, E], retryMs: 100 }, pools: { poolSize: 64 * MiB } });
    const fdsOf = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length;
    // Fds are stored one datagram each: wait by reading the manager's socket only (a synchronous
    // `kvmchan status` would stall a daemon waiting for us to read).
    const names = (): string[] => {
      sm.drain();
      return sm.names;
    };
    s.createDomain(D, uuidD);
    s.createDomain(E, '6b766d63-6861-6e00-0000-00000000000e');
    let child = await start();
    const prefixD = `kvmchan/libvirt/${uuidD}/`;
    const VECTORS = 64;
    const perDomain = 3 + 1 + 2 * VECTORS;
    await until(() => names().length === 2 * perDomain, 30_000, 'both domains stored');
    await until(() => s.status().pools.filter((p) => p.joined === 1).length === 2, 10_000, 'pools attached');
    const id = s.status().domains.find((x) => x.name === D)!.domain;
    const pool = s.status().pools.find((p) => p.memberA === id)!;
    const storedD = names().filter((n) => n.startsWith(prefixD));
    const uid = process.geteuid!();
    assert.deepEqual(
      storedD,
      [
        `${prefixD}ctl/p0v0`,
        `${prefixD}ctl/p1v0`,
        `${prefixD}ctl/shm`,
        ...[0, 1].flatMap((p) => Array.from({ length: VECTORS }, (_, v) => `${prefixD}pool${pool.pool}u${uid}/p${p}v${v}`)).sort(),
        `${prefixD}pool${pool.pool}u${uid}/shm`,
      ].sort(),
      "D's control device and pool, shm and both peers' vectors, under its UUID",
    );
    const ctl = (): number => session(sm.store.find((e) => e.name === `${prefixD}ctl/shm`)!.fd);
    const xmlBefore = shmems(s.liveXml(D));

    for (const how of ['SIGKILL', 'SIGTERM'] as const) {
      await stopDaemon(child, how);
      if (how === 'SIGTERM') s.destroyDomain(E); // gone while no kvmchand watched
      assert.equal(names().length, 2 * perDomain, `${how}: nothing removed from the store`);
      fs.writeFileSync(s.logFile, '');
      const before = ctl();
      child = await start();
      await until(() => s.logs().some((l) => l.msg === 'libvirt domain adopted from stored fds'), 20_000, `${how}: adoption`);
      await until(() => s.status().pools.some((p) => p.pool === pool.pool && p.joined === 1), 10_000, `${how}: pool adopted`);
      assert.equal(s.status().domains.find((x) => x.name === D)?.domain, id, `${how}: same domain id`);
      assert.deepEqual(
        s
          .status()
          .pools.filter((p) => p.memberA === id)
          .map((p) => p.pool),
        [pool.pool],
        `${how}: the same pool, no new one`,
      );
      assert.deepEqual(shmems(s.liveXml(D)), xmlBefore, `${how}: nothing attached or detached`);
      assert.ok(!s.logs().some((l) => l.msg === 'device attached' && l.domain === id), `${how}: no attach`);
      await until(() => ctl() === before + 1, 5000, `${how}: a new session offered to the guest`);
      if (how === 'SIGTERM') {
        await until(() => names().every((n) => n.startsWith(prefixD)), 10_000, "E's fds dropped");
        assert.ok(s.logs().some((l) => l.msg === 'stored fd dropped'));
      }
      assert.deepEqual(
        names().filter((n) => n.startsWith(prefixD)),
        storedD,
        `${how}: D's store unchanged (nothing stored twice)`,
      );
      t.diagnostic(`${how}: adopted domain ${id}, pool ${pool.pool}, session ${ctl()}; daemon fds ${fdsOf(child.pid!)}`);
    }

    // The domain goes: its kvmchan domain is removed and everything stored for it.
    const served = fdsOf(child.pid!);
    s.destroyDomain(D);
    await until(() => names().length === 0, 20_000, 'the store emptied');
    await until(() => !s.status().domains.some((x) => x.name === D), 10_000, 'domain removed');
    const after = fdsOf(child.pid!);
    assert.ok(after <= served - perDomain, `daemon fds: ${served} serving, ${after} after the domain went`);
    await stopDaemon(child);
  },
);

test(
  'fd store: a boot domain (control device in its XML) running under a restarted kvmchand is adopted; its boot device listens again',
  { skip },
  async (t) => {
    const s = new Setup();
    const F = 'kvmchan-e2e-f';
    const uuid = '6b766d63-6861-6e00-0000-00000000000f';
    const { sm, start } = s.managed({ libvirt: { domains: [F], bootDomains: [F], retryMs: 100 }, pools: { poolSize: 64 * MiB } });
    const names = (): string[] => {
      sm.drain();
      return sm.names;
    };
    let child = await start();
    const boot = bootControlPath(s.runtimeDir, F);
    await until(() => fs.existsSync(boot), 10_000, 'the boot device listening');
    const file = path.join(s.dir, `${F}.xml`);
    const device =
      `<shmem name='kvmchan-ctl'><model type='ivshmem-doorbell'/><server path='${boot}'/><msi vectors='1' ioeventfd='on'/>` +
      `<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></shmem>`;
    fs.writeFileSync(
      file,
      osLessDomainXml(F).replace('<name>', `<uuid>${uuid}</uuid>\n  <name>`).replace('<memballoon', `${device}\n    <memballoon`),
    );
    env.virsh('create', file);
    s.domains.push(F);
    await until(() => s.logs().some((l) => l.msg === 'libvirt domain served through its boot device'), 20_000, 'served on its boot device');
    await until(() => names().length === 3 + 1 + 2 * 64, 20_000, 'its devices stored');
    const id = s.status().domains.find((x) => x.name === F)!.domain;

    await stopDaemon(child, 'SIGTERM');
    fs.writeFileSync(s.logFile, '');
    child = await start();
    await until(() => s.logs().some((l) => l.msg === 'libvirt domain adopted from stored fds'), 20_000, 'adoption');
    assert.equal(s.status().domains.find((x) => x.name === F)?.domain, id, 'the same domain id');
    assert.ok(!s.logs().some((l) => l.msg === 'device attached'), 'nothing attached');
    assert.ok(!s.logs().some((l) => l.code === 'KVMCHAN_E_VMM_STALE'), 'not refused as stale');
    assert.ok(fs.existsSync(boot), 'the boot device listens for the next start');
    t.diagnostic(`boot domain ${F} adopted as domain ${id}`);

    s.destroyDomain(F);
    await until(() => names().length === 0, 20_000, 'the store emptied');
    await stopDaemon(child);
  },
);
