// VM tier (docs/vms.md §7): a guest booted with its IOMMU switched off (intel_iommu=off) and
// without VFIO no-IOMMU mode: `kvmchand --guest` exits at once with KVMCHAN_E_NO_IOMMU and a
// message that names both ways to fix it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { bootVm, vmPrerequisites, REPO_ROOT, type TestVm } from '../helpers/vm.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
let vm: TestVm | null = null;

before(async () => {
  if ('reason' in pre) return;
  vm = await bootVm({ qemu: pre.qemu, image: pre.image, extraKernelArgs: ['intel_iommu=off'] });
});

after(async () => {
  await vm?.shutdown();
});

test('kvmchand --guest without an IOMMU or no-IOMMU mode exits with KVMCHAN_E_NO_IOMMU', { skip }, async (t) => {
  const v = vm!;
  const groups = await v.exec('ls /sys/kernel/iommu_groups | wc -l; cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode 2>&1');
  t.diagnostic(`iommu groups / noiommu parameter: ${groups.stdout.replace(/\n/g, ' ')}`);
  const r = await v.exec([
    'node',
    path.join(REPO_ROOT, 'dist', 'src', 'daemon', 'main.js'),
    '--guest',
    '--runtime-dir',
    '/run/kg',
    '--log-level',
    'warn',
  ]);
  t.diagnostic(r.stderr.trim());
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\[KVMCHAN_E_NO_IOMMU\]/);
  assert.match(r.stderr, /intel_iommu=on/);
  assert.match(r.stderr, /enable_unsafe_noiommu_mode/);
});
