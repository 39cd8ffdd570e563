// Trust anchors (docs/security.md): another local user can neither make a daemon use a runtime
// directory it controls, nor pose as the daemon to a client. Both attacks run for real as
// uid 65534 (nobody).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Vchan } from '../../src/index.js';
import { SOCKET_NAME } from '../../src/paths.js';
import { buildClibDrivers, testBinDir } from '../clib/build-clib.js';

const NOBODY = 65534;
const DAEMON = fileURLToPath(new URL('../../src/daemon/main.js', import.meta.url));
const isRoot = process.getuid?.() === 0;
const python = ['/usr/bin/python3', '/usr/bin/python3.11'].find((p) => fs.existsSync(p));
const skip = !isRoot
  ? 'needs root (runs the attacker as another uid)'
  : python === undefined
    ? 'needs /usr/bin/python3 for the fake daemon'
    : false;

let scratch = '';
const children: ChildProcess[] = [];

before(() => {
  // /tmp itself, not a private mkdtemp parent: the attacker must be able to reach it.
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-trust-'));
  fs.chmodSync(scratch, 0o755);
});

after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(scratch, { recursive: true, force: true });
});

test('kvmchand refuses a runtime directory another user created', { skip }, () => {
  const dir = path.join(scratch, 'planted');
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.chownSync(dir, NOBODY, NOBODY);
  const r = spawnSync(process.execPath, [DAEMON, '--runtime-dir', dir], { encoding: 'utf8', timeout: 20_000 });
  assert.notEqual(r.status, 0, 'the daemon must not start');
  assert.match(r.stderr + r.stdout, /KVMCHAN_E_RUNTIME_DIR_UNSAFE|belongs to uid 65534/);
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing was created in the attacker-owned directory');
});

test('kvmchand refuses a runtime directory others may write', { skip }, () => {
  const dir = path.join(scratch, 'open');
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o777);
  const r = spawnSync(process.execPath, [DAEMON, '--runtime-dir', dir], { encoding: 'utf8', timeout: 20_000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /writable by group or others/);
});

test('a client refuses a daemon socket served by another (non-root) user', { skip }, async () => {
  const dir = path.join(scratch, 'spoofed');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chownSync(dir, NOBODY, NOBODY);
  const fake = await startImpostor(dir);
  await assert.rejects(Vchan.listen({ port: 7, domain: 0, runtimeDir: dir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'KVMCHAN_E_UNTRUSTED_DAEMON');
    assert.match(err.message, /uid 65534/);
    return true;
  });
  // The impostor accepted the connection; what it read before the client hung up is all it
  // ever gets: nothing (a closed SEQPACKET connection reads as 0 bytes).
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (/got \d+/.test(fake.out())) resolve();
    };
    fake.child.stdout!.on('data', check);
    check();
  });
  assert.match(fake.out(), /got 0\n/, 'the client sent nothing to the impostor');
});

/** The attacker's "daemon", run as nobody: listens on `dir`'s socket and reports what it reads. */
async function startImpostor(dir: string): Promise<{ child: ChildProcess; out: () => string }> {
  const sock = path.join(dir, SOCKET_NAME);
  // The attacker's "daemon": listens, accepts, and would read whatever a client sends.
  const script = [
    'import socket, sys, os',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)',
    `s.bind(${JSON.stringify(sock)})`,
    `os.chmod(${JSON.stringify(sock)}, 0o777)`,
    's.listen(8)',
    'print("ready", flush=True)',
    'while True:',
    '    c, _ = s.accept()',
    '    data = c.recv(65536)',
    '    print("got", len(data), flush=True)',
  ].join('\n');
  const fake = spawn(python!, ['-c', script], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(fake);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    fake.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    fake.once('exit', (code) => {
      reject(new Error(`fake daemon exited ${String(code)}`));
    });
  });
  return { child: fake, out: () => out };
}

test('libvchan-kvm refuses a daemon socket served by another (non-root) user', { skip }, async () => {
  buildClibDrivers();
  const dir = path.join(scratch, 'spoofed-c');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chownSync(dir, NOBODY, NOBODY);
  const fake = await startImpostor(dir);
  const r = spawnSync(path.join(testBinDir, 'vchan_peer'), ['server', '0', '7', '0', '0'], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, KVMCHAN_RUNTIME_DIR: dir },
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /server init failed: Operation not permitted/);
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (/got \d+/.test(fake.out())) resolve();
    };
    fake.child.stdout!.on('data', check);
    check();
  });
  assert.match(fake.out(), /got 0\n/, 'the C client sent nothing to the impostor');
});
