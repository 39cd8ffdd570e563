// Discovery and binding against a fake sysfs tree (src/ivshmem/vfio/sysfs.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  listIvshmemDevices,
  iommuMode,
  bindVfioPci,
  groupNode,
  pciCandidate,
  IOMMU_MISSING_MESSAGE,
} from '../../src/ivshmem/vfio/sysfs.js';

interface FakeDev {
  bdf: string;
  vendor?: string;
  device?: string;
  driver?: string;
  group?: number;
}

function fakeSysfs(devs: FakeDev[], opts: { groups?: Record<string, string>; noiommu?: string; vfioDriver?: boolean } = {}): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-sysfs-'));
  const pci = path.join(root, 'bus', 'pci');
  fs.mkdirSync(path.join(pci, 'devices'), { recursive: true });
  fs.mkdirSync(path.join(pci, 'drivers'), { recursive: true });
  fs.writeFileSync(path.join(pci, 'drivers_probe'), '');
  if (opts.vfioDriver !== false) fs.mkdirSync(path.join(pci, 'drivers', 'vfio-pci'));
  fs.mkdirSync(path.join(root, 'kernel', 'iommu_groups'), { recursive: true });
  for (const [g, name] of Object.entries(opts.groups ?? {})) {
    fs.mkdirSync(path.join(root, 'kernel', 'iommu_groups', g));
    if (name !== '') fs.writeFileSync(path.join(root, 'kernel', 'iommu_groups', g, 'name'), `${name}\n`);
  }
  if (opts.noiommu !== undefined) {
    fs.mkdirSync(path.join(root, 'module', 'vfio', 'parameters'), { recursive: true });
    fs.writeFileSync(path.join(root, 'module', 'vfio', 'parameters', 'enable_unsafe_noiommu_mode'), `${opts.noiommu}\n`);
  }
  for (const d of devs) {
    const dir = path.join(pci, 'devices', d.bdf);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'vendor'), `${d.vendor ?? '0x1af4'}\n`);
    fs.writeFileSync(path.join(dir, 'device'), `${d.device ?? '0x1110'}\n`);
    fs.writeFileSync(path.join(dir, 'driver_override'), '(null)\n');
    if (d.driver !== undefined) {
      fs.mkdirSync(path.join(pci, 'drivers', d.driver), { recursive: true });
      fs.writeFileSync(path.join(pci, 'drivers', d.driver, 'unbind'), '');
      fs.symlinkSync(path.join(pci, 'drivers', d.driver), path.join(dir, 'driver'));
    }
    if (d.group !== undefined) fs.symlinkSync(`../../../kernel/iommu_groups/${d.group}`, path.join(dir, 'iommu_group'));
  }
  return root;
}

test('lists only 1af4:1110 devices, sorted, with driver and group', (t) => {
  const sysfs = fakeSysfs(
    [
      { bdf: '0000:02:00.0', group: 9 },
      { bdf: '0000:01:00.0', driver: 'vfio-pci', group: 8 },
      { bdf: '0000:00:1f.2', vendor: '0x8086', device: '0x2922' },
      { bdf: '0000:03:00.0', device: '0x1000' },
      { bdf: 'garbage' },
    ],
    { groups: { 8: '', 9: '' } },
  );
  t.after(() => fs.rmSync(sysfs, { recursive: true }));
  assert.deepEqual(listIvshmemDevices({ sysfs }), [
    { bdf: '0000:01:00.0', driver: 'vfio-pci', iommuGroup: 8 },
    { bdf: '0000:02:00.0', driver: null, iommuGroup: 9 },
  ]);
  assert.equal(pciCandidate('0000:09:00.0', { sysfs }), null);
  assert.throws(() => pciCandidate('../../etc', { sysfs }), { code: 'KVMCHAN_E_INVALID_ARG' });
  assert.deepEqual(listIvshmemDevices({ sysfs: path.join(sysfs, 'nope') }), []);
});

test('IOMMU mode: real groups, no-IOMMU parameter, or an error that says what is missing', (t) => {
  const a = fakeSysfs([], { groups: { 0: '' } });
  const b = fakeSysfs([], { groups: { 0: 'vfio-noiommu' }, noiommu: 'Y' });
  const c = fakeSysfs([], { noiommu: 'N' });
  const d = fakeSysfs([]);
  t.after(() => {
    for (const s of [a, b, c, d]) fs.rmSync(s, { recursive: true });
  });
  assert.equal(iommuMode({ sysfs: a }), 'iommu');
  assert.equal(iommuMode({ sysfs: b }), 'noiommu', 'vfio-noiommu groups are not an IOMMU');
  for (const sysfs of [c, d]) {
    assert.throws(
      () => iommuMode({ sysfs }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'KVMCHAN_E_NO_IOMMU');
        assert.equal(err.message, IOMMU_MISSING_MESSAGE);
        assert.match(err.message, /intel_iommu=on/);
        assert.match(err.message, /intel-iommu,intremap=on/);
        assert.match(err.message, /kernel-irqchip=split/);
        assert.match(err.message, /enable_unsafe_noiommu_mode/);
        return true;
      },
    );
  }
});

test('bind: driver_override, unbind from the old driver, drivers_probe retried until bound', async (t) => {
  const sysfs = fakeSysfs([{ bdf: '0000:01:00.0', driver: 'other', group: 3 }], { groups: { 3: '' } });
  t.after(() => fs.rmSync(sysfs, { recursive: true }));
  const dir = path.join(sysfs, 'bus', 'pci', 'devices', '0000:01:00.0');
  const probe = path.join(sysfs, 'bus', 'pci', 'drivers_probe');
  // A fake kernel: the first drivers_probe binds nothing, the second binds vfio-pci.
  let probes = 0;
  const watcher = setInterval(() => {
    if (fs.readFileSync(probe, 'utf8') === '') return;
    fs.writeFileSync(probe, '');
    probes++;
    if (probes === 2) {
      fs.rmSync(path.join(dir, 'driver'), { force: true });
      fs.symlinkSync(path.join(sysfs, 'bus', 'pci', 'drivers', 'vfio-pci'), path.join(dir, 'driver'));
    } else {
      fs.rmSync(path.join(dir, 'driver'), { force: true });
    }
  }, 2);
  t.after(() => clearInterval(watcher));
  await bindVfioPci('0000:01:00.0', { sysfs, timeoutMs: 5000 });
  assert.equal(fs.readFileSync(path.join(dir, 'driver_override'), 'utf8'), 'vfio-pci');
  assert.equal(fs.readFileSync(path.join(sysfs, 'bus', 'pci', 'drivers', 'other', 'unbind'), 'utf8'), '0000:01:00.0');
  assert.ok(probes >= 2);
  assert.equal(pciCandidate('0000:01:00.0', { sysfs })?.driver, 'vfio-pci');
  // Already bound: nothing written.
  fs.writeFileSync(probe, '');
  await bindVfioPci('0000:01:00.0', { sysfs });
  assert.equal(fs.readFileSync(probe, 'utf8'), '');
  assert.equal(groupNode('0000:01:00.0', 'iommu', { sysfs, dev: '/devx' }), '/devx/vfio/3');
  assert.equal(groupNode('0000:01:00.0', 'noiommu', { sysfs, dev: '/devx' }), '/devx/vfio/noiommu-3');
});

test('bind: modprobe when vfio-pci is missing, a clear error if it stays missing; timeout when nothing binds', async (t) => {
  const sysfs = fakeSysfs([{ bdf: '0000:01:00.0' }], { vfioDriver: false });
  t.after(() => fs.rmSync(sysfs, { recursive: true }));
  let modprobes = 0;
  await assert.rejects(
    bindVfioPci('0000:01:00.0', {
      sysfs,
      modprobe: () => {
        modprobes++;
      },
    }),
    { code: 'KVMCHAN_E_VFIO', message: /vfio-pci driver is not available/ },
  );
  assert.equal(modprobes, 1);
  fs.mkdirSync(path.join(sysfs, 'bus', 'pci', 'drivers', 'vfio-pci'));
  await assert.rejects(bindVfioPci('0000:01:00.0', { sysfs, timeoutMs: 50 }), { code: 'KVMCHAN_E_TIMEOUT' });
  assert.throws(() => groupNode('0000:01:00.0', 'iommu', { sysfs }), { code: 'KVMCHAN_E_NO_IOMMU' });
});
