#!/usr/bin/env node
// npm's install step (package.json "install"). In a checkout (src/ and tsconfig.json present)
// it builds everything, as README.md says: the native addon with warnings as errors, the
// TypeScript and the C libraries. In an installed package (the TypeScript was compiled before
// packing, docs/operations.md "Installing") it only builds the native addon from source,
// without -Werror: a newer compiler's new warning must not break a user's install.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const checkout = existsSync(path.join(root, 'src')) && existsSync(path.join(root, 'tsconfig.json'));

function run(script, env = {}) {
  // npm_execpath is the npm running this install; fall back to npm on the PATH.
  const npm = process.env['npm_execpath'];
  const [cmd, args] = npm ? [process.execPath, [npm, 'run', '-s', script]] : ['npm', ['run', '-s', script]];
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (checkout) {
  run('build:native', { KVMCHAN_WERROR: '1' });
  run('build:ts');
  run('build:clib');
} else {
  run('build:native');
}
