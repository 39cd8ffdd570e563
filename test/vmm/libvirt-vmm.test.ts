// The libvirt backend (src/daemon/vmm/libvirt/libvirt-vmm.ts) against a fake libvirtd: live-XML
// placement (control device on the free port least fit for a pool, pools on ports with
// pref64-reserve), the stale-device refusal, no-port refusal, lifecycle events, stable ids by
// UUID across backend restarts, reconnect + re-sync after libvirtd goes away, boot devices
// declared in the persistent XML, and sockets shared with an unprivileged QEMU's group.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { LibvirtVmm, bootControlPath } from '../../src/daemon/vmm/libvirt/libvirt-vmm.js';
import { IvshmemTestClient } from '../helpers/ivshmem-test-client.js';
import { domainLayout, parseDacLabel, parseXml, shmemXml } from '../../src/daemon/vmm/libvirt/domain-xml.js';
import { Proc } from '../../src/daemon/vmm/libvirt/codec.js';
import type { VmmDomain } from '../../src/daemon/vmm/vmm.js';
import { FakeLibvirt, xdrDomain, xdrError, xdrString, xdrU32 } from './fake-libvirt.js';

const MiB = 1 << 20;
const UUID_A = '6b766d6368616e00000000000000000a';
let dir = '';
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-libvirt-vmm-'));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function liveXml(opts: { shmem?: string; reserved?: number[]; ports?: number } = {}): string {
  const ports = opts.ports ?? 4;
  const reserved = opts.reserved ?? [3, 4];
  let ctl = '';
  for (let i = 1; i <= ports; i++) {
    ctl += `<controller type='pci' index='${i}' model='pcie-root-port'><model name='pcie-root-port'/><target chassis='${i}' port='0x1${i}'/><alias name='pci.${i}'/><address type='pci' domain='0x0000' bus='0x00' slot='0x0${i + 1}' function='0x0'/></controller>\n`;
  }
  const over = reserved
    .map(
      (i) =>
        `<qemu:device alias='pci.${i}'><qemu:frontend><qemu:property name='pref64-reserve' type='unsigned' value='268435456'/></qemu:frontend></qemu:device>`,
    )
    .join('');
  return `<domain type='qemu' id='1' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm-a</name><!-- a comment with <tags> -->
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <controller type='pci' index='0' model='pcie-root'><alias name='pcie.0'/></controller>
    ${ctl}
    <controller type='usb' index='0' model='qemu-xhci'><alias name='usb'/><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></controller>
    ${opts.shmem ?? ''}
  </devices>
  <qemu:override>${over}</qemu:override>
</domain>`;
}

test('domain XML: ports, reserves, occupancy and our own shmem devices', () => {
  const l = domainLayout(
    liveXml({
      shmem: `<shmem name='kvmchan-ctl'><model type='ivshmem-doorbell'/><address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></shmem>`,
    }),
    'kvmchan-',
  );
  assert.equal(l.machine, 'q35');
  assert.deepEqual(
    l.ports.map((p) => [p.index, p.pref64Reserve, p.occupied]),
    [
      [1, 0, true],
      [2, 0, true],
      [3, 256 * MiB, false],
      [4, 256 * MiB, false],
    ],
  );
  assert.deepEqual(l.ownShmem, ['kvmchan-ctl']);
  assert.throws(() => parseXml('<a><b></a>'), /unbalanced/);
  assert.throws(() => parseXml('<a>'), /unclosed/);
  assert.throws(() => parseXml('<a>'.repeat(100) + '</a>'.repeat(100)), /deep/);
  assert.match(shmemXml("x'y", '/p&q', 4, undefined), /name='x&apos;y'.*path='\/p&amp;q'.*vectors='4'/);
  assert.doesNotMatch(shmemXml('a', '/s', 1, 7), /--/);
});

test("domain XML: the user QEMU runs as (DAC seclabel) and our devices' server paths", () => {
  const xml = liveXml({
    shmem: `<shmem name='kvmchan-ctl'><model type='ivshmem-doorbell'/><server path='/run/k/a&amp;b.sock'/></shmem>`,
  }).replace(
    '</domain>',
    `<seclabel type='dynamic' model='apparmor' relabel='yes'><label>libvirt-x</label></seclabel>
     <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+64055</label><imagelabel>+64055:+64055</imagelabel></seclabel></domain>`,
  );
  const l = domainLayout(xml, 'kvmchan-');
  assert.deepEqual(l.qemuIds, { uid: 64055, gid: 64055 });
  assert.equal(l.shmemServers.get('kvmchan-ctl'), '/run/k/a&b.sock');
  assert.equal(domainLayout(liveXml({}), 'kvmchan-').qemuIds, null);
  assert.equal(parseDacLabel('root:root'), null, 'names are not numbers: no guess');
  assert.equal(parseDacLabel('+1:+99999999999'), null);
  assert.deepEqual(parseDacLabel('0:0'), { uid: 0, gid: 0 });
});

interface World {
  fake: FakeLibvirt;
  xml: string;
  running: boolean;
  attached: string[];
}

async function world(): Promise<World> {
  const w: World = { fake: await FakeLibvirt.start(path.join(dir, 'libvirt-sock')), xml: liveXml(), running: true, attached: [] };
  w.fake.onCall = (c) => {
    switch (c.procedure) {
      case Proc.AUTH_LIST:
        return { ok: Buffer.concat([xdrU32(1), xdrU32(0)]) };
      case Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY:
        return { ok: xdrU32(c.payload.readUInt32BE(0) + 100) };
      case Proc.CONNECT_LIST_ALL_DOMAINS:
        return {
          ok: w.running ? Buffer.concat([xdrU32(1), xdrDomain('vm-a', UUID_A, 1), xdrU32(1)]) : Buffer.concat([xdrU32(0), xdrU32(0)]),
        };
      case Proc.DOMAIN_GET_XML_DESC:
        return { ok: xdrString(w.xml) };
      case Proc.DOMAIN_ATTACH_DEVICE_FLAGS: {
        const nameLen = c.payload.readUInt32BE(0);
        const off = 4 + nameLen + ((4 - (nameLen % 4)) % 4) + 16 + 4;
        const len = c.payload.readUInt32BE(off);
        const xml = c.payload.subarray(off + 4, off + 4 + len).toString();
        w.attached.push(xml);
        const bus = /bus='(0x[0-9a-f]+)'/.exec(xml)?.[1];
        w.xml = w.xml.replace(
          '</devices>',
          `<shmem name='${/name='([^']+)'/.exec(xml)![1]}'>${bus !== undefined ? `<address type='pci' bus='${bus}'/>` : ''}</shmem></devices>`,
        );
        return { ok: Buffer.alloc(0) };
      }
      default:
        return { ok: Buffer.alloc(0) };
    }
  };
  return w;
}

function backend(rt: string, sock: string): LibvirtVmm {
  fs.mkdirSync(rt, { recursive: true });
  return new LibvirtVmm({ runtimeDir: rt, socketPath: sock, poolSize: 64 * MiB, retryMs: 50 });
}

test('serves a running domain: control device on port 2, a pool on port 3; STOPPED removes it', async () => {
  const w = await world();
  const rt = path.join(dir, 'rt1');
  const vmm = backend(rt, w.fake.path);
  try {
    const added = once(vmm, 'domain-added');
    vmm.start();
    const [d] = (await added) as [VmmDomain];
    assert.equal(d.name, 'vm-a');
    assert.equal(vmm.has(d.id), true);
    assert.match(
      w.attached[0]!,
      /<shmem name='kvmchan-ctl'><model type='ivshmem-doorbell'\/><server path='[^']+\/domains\/1\/control\.sock'\/><msi vectors='1' ioeventfd='on'\/><address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'\/><\/shmem>/,
    );
    vmm.plugPool(d.id, { pool: 5, socketPath: '/x/pool-5.sock', vectors: 64, size: 64 * MiB } as never);
    const deadline = Date.now() + 2000;
    while (w.attached.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.match(w.attached[1]!, /name='kvmchan-pool-5'.*vectors='64'.*bus='0x03'/);
    const removed = once(vmm, 'domain-removed');
    w.fake.sendEvent(
      Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE,
      Buffer.concat([xdrU32(100), xdrDomain('vm-a', UUID_A, 1), xdrU32(5), xdrU32(1)]),
    );
    const [r] = (await removed) as [VmmDomain];
    assert.equal(r.id, d.id);
    assert.deepEqual(vmm.domains(), []);
    assert.equal(fs.existsSync(path.join(rt, 'domains', String(d.id))), false, 'domain directory removed');
  } finally {
    vmm.close();
    await w.fake.close();
  }
});

test('stale devices and missing ports are refused without attaching anything', async () => {
  for (const [xml, code] of [
    [liveXml({ shmem: `<shmem name='kvmchan-pool-3'><address type='pci' bus='0x04'/></shmem>` }), 'KVMCHAN_E_VMM_STALE'],
    [liveXml({ reserved: [] }), 'KVMCHAN_E_VMM_NO_PORT'],
  ] as const) {
    const w = await world();
    w.xml = xml;
    const vmm = backend(path.join(dir, `rt-${code}`), w.fake.path);
    try {
      vmm.start();
      const deadline = Date.now() + 2000;
      while (vmm.list()[0]?.state !== 'refused' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal(vmm.list()[0]?.errorCode, code);
      assert.deepEqual(w.attached, []);
      assert.deepEqual(vmm.domains(), []);
    } finally {
      vmm.close();
      await w.fake.close();
    }
  }
});

test('ids are stable by UUID across backend restarts; libvirtd going away keeps the domain, re-sync removes it if gone', async () => {
  const w = await world();
  const rt = path.join(dir, 'rt3');
  const vmm = backend(rt, w.fake.path);
  let id: number;
  try {
    const added = once(vmm, 'domain-added');
    vmm.start();
    id = ((await added) as [VmmDomain])[0].id;
    // libvirtd restarts while the domain keeps running: still served, reconnected.
    w.fake.dropClients();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(vmm.connects, 2);
    assert.equal(vmm.has(id), true);
    // Gone while we were disconnected: removed on re-sync.
    w.running = false;
    const removed = once(vmm, 'domain-removed');
    w.fake.dropClients();
    await removed;
  } finally {
    vmm.close();
    await w.fake.close();
  }
  const again = await world();
  const vmm2 = backend(rt, again.fake.path);
  try {
    const added = once(vmm2, 'domain-added');
    vmm2.start();
    assert.equal(((await added) as [VmmDomain])[0].id, id, 'same id by UUID');
  } finally {
    vmm2.close();
    await again.fake.close();
  }
});

test("an attach refused by libvirt leaves the domain refused with libvirt's message", async () => {
  const w = await world();
  const base = w.fake.onCall;
  w.fake.onCall = (c) =>
    c.procedure === Proc.DOMAIN_ATTACH_DEVICE_FLAGS ? { error: xdrError(1, 'internal error: unable to execute QEMU command') } : base(c);
  const vmm = backend(path.join(dir, 'rt4'), w.fake.path);
  try {
    vmm.start();
    const deadline = Date.now() + 2000;
    while (vmm.list()[0]?.state !== 'refused' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(vmm.list()[0]?.errorCode, 'KVMCHAN_E_LIBVIRT_CALL');
    assert.match(vmm.list()[0]!.error!, /unable to execute QEMU command/);
    assert.equal(fs.existsSync(path.join(dir, 'rt4', 'domains', '1')), false);
  } finally {
    vmm.close();
    await w.fake.close();
  }
});

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function startedEvent(): Buffer {
  return Buffer.concat([xdrU32(100), xdrDomain('vm-a', UUID_A, 1), xdrU32(2), xdrU32(0)]);
}

test('a boot domain: its control device listens before the domain runs; started with it and attached, it is served without an attach', async () => {
  const w = await world();
  w.running = false;
  const rt = path.join(dir, 'rt-boot');
  fs.mkdirSync(rt, { recursive: true });
  const vmm = new LibvirtVmm({ runtimeDir: rt, socketPath: w.fake.path, poolSize: 64 * MiB, retryMs: 50, bootDomains: ['vm-a'] });
  const sock = bootControlPath(rt, 'vm-a');
  let qemu: IvshmemTestClient | null = null;
  try {
    vmm.start();
    assert.ok(fs.statSync(sock).isSocket(), 'listening from the start, libvirt or not');
    assert.equal(fs.statSync(path.dirname(sock)).mode & 0o7777, 0o700);
    // QEMU starts: it connects while it starts, then libvirt reports STARTED with the device in the live XML.
    qemu = IvshmemTestClient.connect(sock);
    await qemu.next(5000);
    w.running = true;
    w.xml = liveXml({ shmem: `<shmem name='kvmchan-ctl'><server path='${sock}'/><address type='pci' bus='0x01'/></shmem>` });
    const added = once(vmm, 'domain-added');
    w.fake.sendEvent(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, startedEvent());
    const [d] = (await added) as [VmmDomain];
    assert.deepEqual(w.attached, [], 'nothing attached for the control device');
    assert.equal(vmm.controlDevice(d.id).socketPath, sock);
    // It stops: removed, and a fresh device listens for its next start.
    qemu.close();
    qemu = null;
    const removed = once(vmm, 'domain-removed');
    w.running = false;
    w.fake.sendEvent(
      Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE,
      Buffer.concat([xdrU32(100), xdrDomain('vm-a', UUID_A, 1), xdrU32(5), xdrU32(1)]),
    );
    await removed;
    await until('listening again', () => fs.existsSync(sock));
  } finally {
    qemu?.close();
    vmm.close();
    await w.fake.close();
  }
  assert.equal(fs.existsSync(path.join(rt, 'libvirt')), false, 'close() removes the boot directories');
});

test('a boot domain running without our QEMU connection (kvmchand restarted under it) is refused as stale', async () => {
  const w = await world();
  const rt = path.join(dir, 'rt-boot-stale');
  fs.mkdirSync(rt, { recursive: true });
  const sock = bootControlPath(rt, 'vm-a');
  w.xml = liveXml({ shmem: `<shmem name='kvmchan-ctl'><server path='${sock}'/><address type='pci' bus='0x01'/></shmem>` });
  const vmm = new LibvirtVmm({ runtimeDir: rt, socketPath: w.fake.path, poolSize: 64 * MiB, retryMs: 50, bootDomains: ['vm-a'] });
  try {
    vmm.start();
    await until('refused', () => vmm.list()[0]?.state === 'refused', 10_000);
    assert.equal(vmm.list()[0]?.errorCode, 'KVMCHAN_E_VMM_STALE');
    assert.ok(fs.existsSync(sock), 'still listening for its next start');
  } finally {
    vmm.close();
    await w.fake.close();
  }
});

test("QEMU running as another user (DAC label): the domain's directory is shared with its group only", async () => {
  const w = await world();
  w.xml = liveXml().replace(
    '</domain>',
    `<seclabel type='dynamic' model='dac' relabel='yes'><label>+65534:+65534</label></seclabel></domain>`,
  );
  const rt = path.join(dir, 'rt-dac');
  const vmm = backend(rt, w.fake.path);
  try {
    const added = once(vmm, 'domain-added');
    vmm.start();
    const [d] = (await added) as [VmmDomain];
    const st = fs.statSync(path.join(rt, 'domains', String(d.id)));
    assert.equal(st.mode & 0o7777, 0o2710);
    assert.equal(st.gid, 65534);
    const sock = fs.statSync(path.join(rt, 'domains', String(d.id), 'control.sock'));
    assert.equal(sock.mode & 0o777, 0o660);
    assert.equal(sock.gid, 65534, 'the socket inherits the group (setgid directory)');
    assert.equal(fs.statSync(path.join(rt, 'domains')).mode & 0o777, 0o711);
  } finally {
    vmm.close();
    await w.fake.close();
  }
});
