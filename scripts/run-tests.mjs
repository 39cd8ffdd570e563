#!/usr/bin/env node
// Runs every unit and integration test (tiers 1-2, DESIGN.md §8) from the compiled dist/test
// tree, then the C libraries' own suite (make -C clib check: API contract, event loop, threads,
// fork, install + pkg-config programs, against a test daemon and the real kvmchand).
// The C suite runs after the node tests because both use clib/build.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync, existsSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
function collect(dir, out) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name === 'e2e' || name === 'vm' || name === 'helpers') continue;
      collect(p, out);
    } else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}
const files = collect(path.join(root, 'dist', 'test'), []);
const extra = process.argv.slice(2);
const node = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=900000', ...extra, ...files], {
  stdio: 'inherit',
  cwd: root,
});
let status = node.status ?? 1;
if (process.env['KVMCHAN_SKIP_CLIB'] !== '1') {
  process.stdout.write('\n# C libraries: make -C clib check\n');
  const c = spawnSync('make', ['-s', '-C', path.join(root, 'clib'), 'check'], { stdio: 'inherit', cwd: root });
  if (c.status !== 0) status = c.status ?? 1;
}
process.exitCode = status;
