/**
 * What an operator relies on when running kvmchand under a service manager
 * (docs/operations.md): `--check-config` and configuration errors with line and column,
 * readiness on $NOTIFY_SOCKET, SIGHUP reloading instead of killing the daemon, and a warning
 * when the socket group does not exist.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { DAEMON_MAIN } from '../../src/cli/private-daemon.js';
import { socketPath } from '../../src/paths.js';
import { waitFor } from '../helpers/wait.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-ops-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = path.join(work, name);
  fs.writeFileSync(file, text);
  return file;
}

function checkConfig(file: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [DAEMON_MAIN, '--check-config', '--config', file], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Running {
  child: ChildProcess;
  runtimeDir: string;
  log: () => string;
  exited: Promise<void>;
}

/** kvmchand with a config file and no --log-level (so the file's logLevel applies). */
async function run(name: string, config: string, env: NodeJS.ProcessEnv = {}): Promise<Running> {
  const runtimeDir = path.join(work, `${name}-run`);
  const logFile = path.join(work, `${name}.log`);
  const out = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, [DAEMON_MAIN, '--runtime-dir', runtimeDir, '--config', config], {
    stdio: ['ignore', out, out],
    env: { ...process.env, ...env },
  });
  fs.closeSync(out);
  children.push(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const log = (): string => fs.readFileSync(logFile, 'utf8');
  await waitFor(() => log().includes('kvmchand ready') || child.exitCode !== null, 30_000, `${name}: daemon ready`);
  assert.equal(child.exitCode, null, `${name} exited: ${log()}`);
  return { child, runtimeDir, log, exited };
}

test('--check-config: exit 0 for a valid file, 1 with file:line:column for each problem', () => {
  const ok = checkConfig(write('ok.json', '{ "logLevel": "debug", "limits": { "maxVchans": 100 } }\n'));
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /configuration .*ok\.json is valid/);

  const bad = write('bad.json', '{\n  "logLevel": "info",\n  "limits": { "maxVchans": 0 },\n  "nope": true\n}\n');
  const r = checkConfig(bad);
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`${bad}:3:28: limits\\.maxVchans: `));
  assert.match(r.stderr, new RegExp(`${bad}:4:3: \\(root\\): Unrecognized key: "nope"`));

  const syntax = write('syntax.json', '{\n  "logLevel": "info",\n}\n');
  const s = checkConfig(syntax);
  assert.equal(s.status, 1);
  assert.match(s.stderr, new RegExp(`config ${syntax}:3:1: not valid JSON`));
});

test('--check-config warns about a socket group that does not exist', () => {
  const r = checkConfig(write('group.json', '{ "socketGroup": "kvmchan-no-such-group" }'));
  assert.equal(r.status, 0);
  assert.match(r.stderr, /warning: socketGroup "kvmchan-no-such-group" does not exist: only root can use the daemon socket/);
});

test(
  'a root daemon logs a missing socket group',
  { skip: process.getuid?.() !== 0 ? 'needs root (the group matters only then)' : false },
  async () => {
    const d = await run('group', write('group-run.json', '{ "socketGroup": "kvmchan-no-such-group" }'));
    assert.match(d.log(), /"level":"warn".*"group":"kvmchan-no-such-group".*socketGroup \\"kvmchan-no-such-group\\" does not exist/);
    d.child.kill('SIGTERM');
    await d.exited;
  },
);

test('SIGHUP reloads logLevel, reports an invalid file and keeps serving', async () => {
  const config = write('hup.json', '{ "logLevel": "info" }');
  const d = await run('hup', config);
  fs.writeFileSync(config, '{ "logLevel": "debug", "limits": { "maxVchans": 99 } }');
  d.child.kill('SIGHUP');
  await waitFor(() => d.log().includes('configuration reloaded') || d.child.exitCode !== null, 10_000, 'reload logged');
  assert.equal(d.child.exitCode, null, 'SIGHUP must not kill the daemon');
  const reloaded = d
    .log()
    .split('\n')
    .find((l) => l.includes('configuration reloaded'))!;
  const entry = JSON.parse(reloaded) as { changed: string[]; needRestart: string[] };
  assert.deepEqual(entry.changed.sort(), ['limits', 'logLevel']);
  assert.deepEqual(entry.needRestart, ['limits']);
  fs.writeFileSync(config, '{ "logLevel": ');
  d.child.kill('SIGHUP');
  await waitFor(() => d.log().includes('configuration not reloaded') || d.child.exitCode !== null, 10_000, 'bad reload logged');
  assert.equal(d.child.exitCode, null);
  assert.ok(fs.existsSync(socketPath(d.runtimeDir)), 'still serving');
  d.child.kill('SIGTERM');
  await d.exited;
  assert.ok(!fs.existsSync(socketPath(d.runtimeDir)), 'socket removed on SIGTERM');
});

const python = spawnSync('python3', ['-c', 'pass']).status === 0;
test('READY=1 on $NOTIFY_SOCKET once the socket exists', { skip: python ? false : 'python3 (the test receiver) not found' }, async () => {
  const notify = path.join(work, 'notify.sock');
  const got = path.join(work, 'notify.txt');
  // A datagram receiver like systemd's: Node cannot bind AF_UNIX datagram sockets.
  const receiver = spawn('python3', [
    '-c',
    'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\n' +
      'while True:\n  m=s.recv(4096)\n  open(sys.argv[2],"ab").write(m+b"--\\n")\n',
    notify,
    got,
  ]);
  children.push(receiver);
  await new Promise<void>((resolve) => receiver.stdout.once('data', () => resolve()));
  const d = await run('notify', write('notify.json', '{}'), { NOTIFY_SOCKET: notify });
  await waitFor(() => fs.existsSync(got) && fs.readFileSync(got, 'utf8').includes('READY=1'), 10_000, 'READY=1');
  const first = fs.readFileSync(got, 'utf8');
  assert.match(first, new RegExp(`MAINPID=${d.child.pid}\\n`));
  assert.ok(fs.existsSync(socketPath(d.runtimeDir)), 'the socket exists when READY=1 arrives');
  d.child.kill('SIGTERM');
  await d.exited;
  assert.match(fs.readFileSync(got, 'utf8'), /STOPPING=1/);
  receiver.kill('SIGKILL');
});
