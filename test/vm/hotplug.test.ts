// VM tier (docs/vms.md "Root ports and BAR windows"): an ivshmem-doorbell device hot-plugged
// over QMP into a running guest, on a root port that reserved a prefetchable window
// (pref64-reserve=512M, bootVm's default), gets its 64 MiB BAR2 and shows up in sysfs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IvshmemServer } from '../../src/ivshmem/server.js';
import { native } from '../../src/native.js';
import { bootVm, vmPrerequisites } from '../helpers/vm.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const MiB = 1 << 20;
const BAR2 = 64 * MiB;

/** Hot-plug a BAR2-sized device on rp2 and return what the guest's sysfs says of BAR2. */
async function hotplug(t: { diagnostic: (s: string) => void }, reserve: string | null): Promise<{ bar2Size: number; log: string }> {
  if ('reason' in pre) throw new Error(pre.reason);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-hotplug-'));
  const shm = native.memfdCreate('kvmchan-vm-hotplug', BAR2, true);
  const socketPath = path.join(dir, 'ivshmem.sock');
  const dev = new IvshmemServer({ socketPath, shmFd: shm, vectors: 2 }).listen();
  const vm = await bootVm({ qemu: pre.qemu, image: pre.image, pref64Reserve: reserve });
  try {
    t.diagnostic(`pref64-reserve=${reserve ?? '(QEMU default)'}: boot ${(vm.bootMs / 1000).toFixed(1)} s`);
    await vm.qmp.execute('chardev-add', {
      id: 'hp-chr',
      backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: socketPath } }, server: false } },
    });
    const t0 = performance.now();
    await vm.qmp.execute('device_add', { driver: 'ivshmem-doorbell', id: 'hp', chardev: 'hp-chr', vectors: 2, bus: 'rp2' });
    // pciehp notices the slot (its own 1 s presence debounce, slower under TCG); then sysfs has it.
    const r = await vm.execOk(`for i in $(seq 1 600); do
        for d in /sys/bus/pci/devices/*; do
          if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ]; then
            sed -n 3p $d/resource; exit 0
          fi
        done
        sleep 0.1
      done; echo "never appeared"; exit 1`);
    const [start, end] = r.stdout
      .trim()
      .split(/\s+/)
      .map((x) => BigInt(x));
    const bar2Size = start === 0n && end === 0n ? 0 : Number(end! - start! + 1n);
    t.diagnostic(`  device in guest sysfs ${(performance.now() - t0).toFixed(0)} ms after device_add; BAR2 ${bar2Size / MiB} MiB`);
    const log = (await vm.exec('dmesg | grep -iE "BAR 2|no space|pciehp" | tail -8')).stdout;
    for (const line of log.trimEnd().split('\n')) t.diagnostic(`  guest dmesg: ${line}`);
    return { bar2Size, log };
  } finally {
    await vm.shutdown();
    dev.close();
    native.close(shm);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('a hot-plugged 64 MiB BAR2 fits a root port with pref64-reserve=512M', { skip }, async (t) => {
  const r = await hotplug(t, '512M');
  assert.equal(r.bar2Size, BAR2);
});
