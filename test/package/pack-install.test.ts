/**
 * `npm install kvmchan` as users get it (docs/operations.md, "Installing"): the project is
 * copied as a clean clone would have it (no dist/, no builds), packed (prepack compiles the
 * TypeScript), and the tarball installed into an empty scratch project. The package must
 * carry dist/, LICENSE, the units and docs and no tests; its install step builds only the
 * native addon; then `import 'kvmchan'` works, both binaries answer --help, and bytes move
 * through a vchan served by the installed kvmchand in a private runtime directory.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { waitFor } from '../helpers/wait.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-pack-'));
let daemonPid: number | undefined;
after(() => {
  if (daemonPid !== undefined) {
    try {
      process.kill(daemonPid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
});

const npmCli = process.env['npm_execpath'];
function npm(args: string[], cwd: string): SpawnSyncReturns<string> {
  const [cmd, argv] = npmCli !== undefined && npmCli.endsWith('.js') ? [process.execPath, [npmCli, ...args]] : ['npm', args];
  return spawnSync(cmd, argv, {
    cwd,
    encoding: 'utf8',
    timeout: 600_000,
    env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' },
  });
}

/** What a clean clone holds: sources only (dist/ and build directories are not in git). */
function cleanClone(dest: string): void {
  const skip = new Set(['node_modules', 'dist', '.git', 'build']);
  for (const entry of [
    'package.json',
    'package-lock.json',
    'README.md',
    'LICENSE',
    'tsconfig.json',
    'tsconfig.pack.json',
    'src',
    'native',
    'clib',
    'docs',
    'contrib',
    'scripts',
  ]) {
    fs.cpSync(path.join(root, entry), path.join(dest, entry), {
      recursive: true,
      filter: (src) => !skip.has(path.basename(src)),
    });
  }
  // The dev dependencies (tsc) as `npm install` in the clone would provide them.
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dest, 'node_modules'));
}

test('pack, install into an empty project, import, run both binaries, move bytes', async (t) => {
  const clone = path.join(work, 'clone');
  fs.mkdirSync(clone);
  cleanClone(clone);
  const packed = npm(['pack', '--json', '--pack-destination', work], clone);
  assert.equal(packed.status, 0, packed.stderr);
  const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  const files = info[0]!.files.map((f) => f.path);
  const tarball = path.join(work, info[0]!.filename);

  for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'dist/src/daemon/main.js', 'LICENSE', 'README.md']) {
    assert.ok(files.includes(f), `${f} in the package`);
  }
  for (const f of [
    'contrib/systemd/kvmchand.service',
    'contrib/systemd/kvmchand-guest.service',
    'docs/operations.md',
    'native/binding.gyp',
  ]) {
    assert.ok(files.includes(f), `${f} in the package`);
  }
  const unwanted = files.filter(
    (f) =>
      /(^|\/)(test|bench|build)\//.test(f) ||
      f.startsWith('dist/test') ||
      f.startsWith('dist/bench') ||
      (f.endsWith('.ts') && !f.endsWith('.d.ts')),
  );
  assert.deepEqual(unwanted, [], 'no tests, benchmarks, builds or TypeScript sources');
  const pkg = JSON.parse(fs.readFileSync(path.join(clone, 'package.json'), 'utf8')) as { os: string[]; license: string };
  assert.deepEqual(pkg.os, ['linux']);
  assert.match(fs.readFileSync(path.join(clone, 'LICENSE'), 'utf8'), /MIT License[\s\S]*kvmchan contributors/);

  // An empty project; the dependencies come from the npm cache the checkout's install filled.
  const app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'scratch', version: '1.0.0', private: true, type: 'module' }));
  let inst = npm(['install', '--offline', tarball], app);
  const offline = inst.status === 0;
  if (!offline && /ENOTCACHED/.test(inst.stderr)) {
    t.diagnostic('not every dependency is in the npm cache: installing with --prefer-offline');
    inst = npm(['install', '--prefer-offline', tarball], app);
  }
  assert.equal(inst.status, 0, inst.stdout + inst.stderr);
  t.diagnostic(offline ? 'installed offline from the npm cache' : 'installed with --prefer-offline');
  const installed = path.join(app, 'node_modules', 'kvmchan');
  assert.ok(fs.existsSync(path.join(installed, 'native', 'build', 'Release', 'kvmchan_native.node')), 'the addon was built');
  assert.ok(!fs.existsSync(path.join(installed, 'clib', 'build')), 'the install step builds only the addon');
  const mk = fs.readFileSync(path.join(installed, 'native', 'build', 'kvmchan_native.target.mk'), 'utf8');
  assert.ok(!mk.includes('-Werror'), 'no -Werror on user machines');

  const bin = (name: string): string => path.join(app, 'node_modules', '.bin', name);
  for (const name of ['kvmchan', 'kvmchand']) {
    const r = spawnSync(bin(name), ['--help'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `${name} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`Usage: ${name}`));
  }

  const runtimeDir = path.join(work, 'run');
  const daemon = spawn(bin('kvmchand'), ['--runtime-dir', runtimeDir, '--log-level', 'warn'], { stdio: 'ignore' });
  daemonPid = daemon.pid;
  const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
  await waitFor(() => fs.existsSync(path.join(runtimeDir, 'kvmchand.sock')) || daemon.exitCode !== null, 60_000, 'installed kvmchand up');
  assert.equal(daemon.exitCode, null, 'the installed daemon runs');
  const program = `
    import { Vchan } from 'kvmchan';
    const opts = { runtimeDir: ${JSON.stringify(runtimeDir)}, port: 4242, domain: 0 };
    const server = await Vchan.listen(opts);
    const client = await Vchan.connect({ ...opts, timeout: 10000 });
    await client.write(Buffer.from('through the installed package'));
    const got = await server.read();
    client.close();
    server.close();
    process.stdout.write(got.toString());
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', program], { cwd: app, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'through the installed package');
  daemon.kill('SIGTERM');
  await exited;
  daemonPid = undefined;
});
