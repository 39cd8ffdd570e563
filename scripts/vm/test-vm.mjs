#!/usr/bin/env node
// `npm run test:vm` (docs/vms.md): build or reuse the guest image, then run dist/test/vm/ one
// file at a time. Without KVMCHAN_REQUIRE_QEMU=1 a missing QEMU or a failed image build makes
// the tests skip (they find no image); with it (CI) both fail the tier.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const required = process.env.KVMCHAN_REQUIRE_QEMU === '1';
const hasQemu = spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { stdio: 'ignore' }).status === 0;
if (!hasQemu && required) {
  console.error('test:vm: KVMCHAN_REQUIRE_QEMU=1 and qemu-system-x86_64 is not installed');
  process.exit(1);
}
const build = spawnSync('bash', [path.join(root, 'scripts', 'vm', 'build-image.sh')], { stdio: 'inherit', cwd: root });
if (build.status !== 0) {
  console.error(`test:vm: guest image build failed (status ${build.status})`);
  if (required) process.exit(1);
}
const dir = path.join(root, 'dist', 'test', 'vm');
if (!existsSync(dir)) {
  console.error(`test:vm: ${dir} missing; run npm run build:ts`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=1800000', ...process.argv.slice(2), dir], {
  stdio: 'inherit',
  cwd: root,
});
process.exitCode = r.status ?? 1;
