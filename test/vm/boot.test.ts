// VM tier (docs/vms.md): a real guest boots under QEMU TCG and runs the host's node and this
// checkout over 9p; the command channel reports stdout, stderr, exit codes, env and cwd.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootVm, vmPrerequisites, REPO_ROOT, type TestVm } from '../helpers/vm.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
let vm: TestVm | null = null;

before(async () => {
  if ('reason' in pre) return;
  vm = await bootVm({ qemu: pre.qemu, image: pre.image });
});

after(async () => {
  await vm?.shutdown();
});

test('the guest boots and runs node from this checkout', { skip }, async (t) => {
  const v = vm!;
  t.diagnostic(
    `guest ${v.image.kver}: QEMU spawn → agent ready ${(v.bootMs / 1000).toFixed(1)} s (guest uptime ${v.guestUptimeAtReady} s)`,
  );
  const t0 = performance.now();
  const r = await v.execOk([
    'node',
    '-e',
    'console.log(JSON.stringify({ v: process.version, cwd: process.cwd(), up: require("os").uptime() }))',
  ]);
  const info = JSON.parse(r.stdout) as { v: string; cwd: string };
  t.diagnostic(
    `first node run: ${(performance.now() - t0).toFixed(0)} ms; boot → node printed ${((v.bootMs + performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  assert.equal(info.v, process.version, "the guest runs the host's node binary");
  assert.equal(info.cwd, REPO_ROOT);
  const t1 = performance.now();
  await v.execOk(['node', '-e', '0']);
  t.diagnostic(`second node run: ${(performance.now() - t1).toFixed(0)} ms`);
  const uname = await v.execOk('uname -r');
  assert.equal(uname.stdout.trim(), v.image.kver);
  // The addon loads: same ELF, same glibc, under the guest kernel.
  const addon = await v.execOk([
    'node',
    '--input-type=module',
    '-e',
    `import { native } from ${JSON.stringify(`${REPO_ROOT}/dist/src/native.js`)}; const fd = native.eventfd(0, 0); native.eventfdWrite(fd, 3); console.log(native.eventfdRead(fd));`,
  ]);
  assert.equal(addon.stdout.trim(), '3');
});

test('exec reports exit codes, stderr, env and cwd; commands run concurrently', { skip }, async () => {
  const v = vm!;
  const r = await v.exec('echo out; echo err >&2; echo "$FOO" "$(pwd)"; exit 7', { env: { FOO: "it's" }, cwd: '/usr' });
  assert.equal(r.code, 7);
  assert.equal(r.stdout, "out\nit's /usr\n");
  assert.equal(r.stderr, 'err\n');
  const slow = v.start(['sh', '-c', 'echo started; while [ ! -e /run/kvmchanvm/go ]; do sleep 0.05; done; echo finished']);
  await slow.waitForOutput(/started/);
  await v.execOk(['touch', '/run/kvmchanvm/go']);
  const s = await slow.done;
  assert.equal(s.stdout, 'started\nfinished\n');
  // The root is read-only; /tmp and the share are writable.
  assert.notEqual((await v.exec(`touch ${REPO_ROOT}/should-not-exist`)).code, 0);
  await v.execOk('echo x >/tmp/x && echo y >/run/kvmchanvm/y');
});

test('host directories under /tmp come back with hostPaths, private ones included', { skip }, async (t) => {
  if ('reason' in pre) return;
  const priv = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-vm-private-'));
  try {
    fs.chmodSync(priv, 0o700);
    fs.writeFileSync(path.join(priv, 'secret'), 'only root reads this\n', { mode: 0o600 });
    const v2 = await bootVm({ qemu: pre.qemu, image: pre.image, hostPaths: [priv] });
    try {
      t.diagnostic(`second boot: ${(v2.bootMs / 1000).toFixed(1)} s`);
      assert.equal((await v2.execOk(['cat', path.join(priv, 'secret')])).stdout, 'only root reads this\n');
      assert.notEqual((await v2.exec(['ls', path.join(os.tmpdir(), path.basename(v2.dir))])).code, 0, 'the rest of /tmp stays covered');
    } finally {
      await v2.shutdown();
    }
  } finally {
    fs.rmSync(priv, { recursive: true, force: true });
  }
});
