// The daemon at its fd limit (docs/security.md, "Quotas"): when accept() fails with EMFILE the
// pending connection stays queued and the listening socket stays readable, so retrying at once
// would spin at 100 % CPU and log a line per try. An attacker of another uid (65534) fills the
// daemon's fd table with idle connections: the daemon's CPU time and its log stay small, and
// it serves again once the attacker has gone.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { socketPath } from '../../src/paths.js';
import { fdCount, sleep, startDaemon, teardown, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';

const NOBODY = 65534;
const python = ['/usr/bin/python3', '/usr/bin/python3.11'].find((p) => fs.existsSync(p));
const asRoot = process.getuid?.() === 0;
const skip = !asRoot
  ? 'needs root (the attacker runs as another uid; lowering the daemon’s hard limit)'
  : python === undefined
    ? 'needs /usr/bin/python3 for the attacker'
    : false;
const WINDOW_MS = 3000;

let d: TestDaemon;
let attacker: ChildProcess | undefined;

before(async () => {
  if (skip !== false) return;
  d = await startDaemon();
  fs.chmodSync(d.runtimeDir, 0o755);
  fs.chmodSync(socketPath(d.runtimeDir), 0o666);
});
after(() =>
  teardown(
    () => attacker?.kill('SIGKILL'),
    () => d?.stop(),
  ),
);

/** utime + stime of `pid`, in clock ticks (/proc/<pid>/stat fields 14 and 15). */
function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

function pauses(): number {
  return d
    .log()
    .split('\n')
    .filter((l) => l.includes('accept failed; pausing new connections')).length;
}

test('at EMFILE the daemon pauses accepting instead of spinning, and serves again after', { skip }, async () => {
  const pid = d.daemon.pid;
  // The daemon raises its soft limit to the hard one at start: lower both, a little above what
  // it holds now.
  const limit = fdCount(pid) + 24;
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`]);
  const script = [
    'import socket, sys',
    `path = ${JSON.stringify(socketPath(d.runtimeDir))}`,
    'conns = []',
    'for i in range(200):',
    '    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)',
    '    s.setblocking(False)',
    '    try:',
    '        s.connect(path)',
    '    except OSError:',
    '        s.close()',
    '        break',
    '    conns.append(s)',
    'print(len(conns), flush=True)',
    'sys.stdin.read()',
  ].join('\n');
  attacker = spawn(python!, ['-c', script], { uid: NOBODY, gid: NOBODY, stdio: ['pipe', 'pipe', 'inherit'] });
  const connected = await within(
    new Promise<number>((resolve) => attacker!.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim())))),
    10_000,
    'the attacker to connect',
  );
  assert.ok(connected > limit, `the attacker queued ${connected} connections`);
  await waitFor(() => pauses() > 0, 10_000, 'the daemon to hit EMFILE');

  // Over a window: CPU time and log lines are counts, read from /proc and the log file.
  const ticks0 = cpuTicks(pid);
  const lines0 = d.log().split('\n').length;
  await sleep(WINDOW_MS); // the window the daemon has to spin in, if it spins
  const cpuMs = ((cpuTicks(pid) - ticks0) * 1000) / Number(execFileSync('getconf', ['CLK_TCK']).toString());
  const lines = d.log().split('\n').length - lines0;
  console.log(`# at EMFILE for ${WINDOW_MS} ms: daemon CPU ${cpuMs} ms, ${lines} log lines`);
  assert.ok(cpuMs < WINDOW_MS / 2, `the daemon used ${cpuMs} ms of CPU in ${WINDOW_MS} ms`);
  assert.ok(lines <= WINDOW_MS / 100 + 10, `${lines} log lines in ${WINDOW_MS} ms`);

  // The attacker leaves: its connections go, and the daemon serves a client again.
  attacker.stdin!.end();
  await new Promise((resolve) => attacker!.once('close', resolve));
  attacker = undefined;
  await waitFor(() => fdCount(pid) < limit - 8, 15_000, 'the daemon to close the attacker’s connections');
  assert.equal(d.daemon.child.exitCode, null, 'the daemon is still running');
  const s = await within(Vchan.listen({ runtimeDir: d.runtimeDir, port: 55 }), 15_000, 'listen after the attack');
  const c = await within(Vchan.connect({ runtimeDir: d.runtimeDir, port: 55, timeout: 10_000 }), 15_000, 'connect after the attack');
  await c.send(Buffer.from('up'));
  assert.equal((await s.recv(2))?.toString(), 'up');
  c.close();
  s.close();
});
