/**
 * Command-line conventions (docs/cli.md "Conventions"): exit statuses and messages of both
 * binaries — timeouts that end the program, truncation reported as failure, the wait
 * announcement, --version, one-line usage errors, EACCES with its own code, a closed output
 * (EPIPE) without stack traces, and the demo's cleanup on EPIPE and on signals.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { DAEMON_MAIN } from '../../src/cli/private-daemon.js';
import { socketPath } from '../../src/paths.js';
import { ForeignUidTree } from '../helpers/foreign-uid.js';
import { CLI_MAIN } from '../helpers/guest-fixture.js';
import { startDaemon, teardown, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';

const VERSION = (
  JSON.parse(fs.readFileSync(path.join(path.dirname(CLI_MAIN), '..', '..', '..', 'package.json'), 'utf8')) as { version: string }
).version;

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Started {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  done: Promise<Result>;
}

function start(
  script: string,
  args: string[],
  opts: { stdin?: number | 'ignore'; closeStdout?: boolean; uid?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Started {
  const child = spawn(process.execPath, [script, ...args], {
    ...(opts.env === undefined ? {} : { env: opts.env }),
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
    ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.uid }),
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
  });
  let out = '';
  let err = '';
  // `| head` that has already gone: the program's first write meets a closed pipe (EPIPE).
  const stdout = child.stdout as Readable;
  if (opts.closeStdout === true) stdout.destroy();
  else stdout.on('data', (b: Buffer) => (out += b.toString()));
  (child.stderr as Readable).on('data', (b: Buffer) => (err += b.toString()));
  const done: Promise<Result> = new Promise((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err })),
  );
  return { child, stdout: () => out, stderr: () => err, done };
}

const kvmchan = (args: string[], opts?: Parameters<typeof start>[2]): Promise<Result> =>
  within(start(CLI_MAIN, args, opts).done, 60000, `kvmchan ${args.join(' ')}`);

let d: TestDaemon;
let work: string;
before(async () => {
  d = await startDaemon();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-conv-'));
});
after(() =>
  teardown(
    () => d?.stop(),
    () => fs.rmSync(work, { recursive: true, force: true }),
  ),
);
const rd = (): string[] => ['--runtime-dir', d.runtimeDir];

test('listen -t with no client gives up after the timeout: exit 1 and a message', async () => {
  const r = await kvmchan([...rd(), 'listen', '7400', '-t', '300ms']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^kvmchan: no client connected within 300 ms \[KVMCHAN_E_TIMEOUT\]$/m);
  // And the port is free again: nothing was left behind.
  const again = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7400 });
  again.close();
});

test('a peer that closes before stdin is sent: exit 1 and how many bytes were not delivered', async () => {
  const file = path.join(work, 'big.bin');
  const size = 8 * 2 ** 20;
  fs.writeFileSync(file, Buffer.alloc(size, 1));
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7401, readMin: 4096 });
  const fd = fs.openSync(file, 'r');
  const client = start(CLI_MAIN, [...rd(), 'connect', '7401'], { stdin: fd });
  fs.closeSync(fd);
  try {
    await server.waitConnected({ timeout: 10000 });
    await server.recv(1000);
    server.close();
    const r = await within(client.done, 30000, 'connect');
    assert.equal(r.code, 1, r.stderr);
    const m =
      /the peer closed before stdin ended: sent (\d+) bytes, (\d+) bytes of stdin were not delivered \[KVMCHAN_E_UNDELIVERED\]/.exec(
        r.stderr,
      );
    assert.ok(m !== null, r.stderr);
    assert.equal(Number(m[1]) + Number(m[2]), size, 'sent + not delivered = the whole file');
    assert.ok(Number(m[2]) > 0);
  } finally {
    server.close();
    client.child.kill('SIGKILL');
  }
});

test('connect announces its wait under -v ("waiting for a server on port N of domain D…")', async () => {
  const r = await kvmchan([...rd(), 'connect', '7402', '-v', '-t', '200ms']);
  assert.match(r.stderr, /^kvmchan: waiting for a server on port 7402 of domain 0…$/m);
  assert.equal(r.code, 1);
  // Without -v and not on a terminal: silent until the failure.
  const quiet = await kvmchan([...rd(), 'connect', '7402', '-t', '200ms']);
  assert.doesNotMatch(quiet.stderr, /waiting/);
});

test('--version on both binaries', async () => {
  for (const script of [CLI_MAIN, DAEMON_MAIN]) {
    for (const flag of ['--version', '-V']) {
      const r = await within(start(script, [flag]).done, 30000, `${script} ${flag}`);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${VERSION}\n`);
    }
  }
});

test('a usage error is one line plus a pointer to --help, exit 2, on both binaries', async () => {
  const cases: [string, string[], RegExp][] = [
    [CLI_MAIN, ['listen', '5', '--bogus'], /^kvmchan: unknown option '--bogus'\nrun 'kvmchan listen --help' for usage\n$/],
    [CLI_MAIN, ['connect'], /^kvmchan: missing required argument 'port'\nrun 'kvmchan connect --help' for usage\n$/],
    [CLI_MAIN, ['demo', '--size', '12Q'], /^kvmchan: .*invalid size '12Q'.*\nrun 'kvmchan demo --help' for usage\n$/],
    [CLI_MAIN, ['frobnicate'], /^kvmchan: unknown command 'frobnicate'\nrun 'kvmchan --help' for usage\n$/],
    [DAEMON_MAIN, ['--bogus'], /^kvmchand: unknown option '--bogus'\nrun 'kvmchand --help' for usage\n$/],
  ];
  for (const [script, args, expected] of cases) {
    const r = await within(start(script, args).done, 30000, args.join(' '));
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, expected);
    assert.doesNotMatch(r.stderr, /Usage:/, 'not the whole help');
  }
});

test('sizes and times: one syntax everywhere, defaults shown the same way', async () => {
  // Help text wraps at 80 columns: compare with the whitespace folded.
  const help = async (cmd: string): Promise<string> => (await kvmchan([cmd, '--help'])).stdout.replace(/\s+/g, ' ');
  assert.match(await help('listen'), /--read-min <size> [^-]*\(default: 64K\)/);
  const proxy = await help('proxy');
  assert.match(proxy, /--timeout <time> [^-]*\(default: 10s\)/);
  assert.match(proxy, /--write-min <size> [^-]*\(default: 64K\)/);
  assert.match(await help('demo'), /--ring <size> [^-]*\(default: 1M\)/);
  // 1.5K of rings: accepted (rounded up by the daemon), not a usage error.
  const r = await kvmchan([...rd(), 'listen', '7403', '--read-min', '1.5K', '-t', '0.1s']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no client connected within 100 ms/);
});

test('EACCES on the daemon socket: its own code and the group hint', async () => {
  // The fixture's socket is 0660 root:root: another uid may traverse the directory but not
  // connect — the situation of a user outside the kvmchan group.
  fs.chmodSync(d.runtimeDir, 0o755);
  const tree = ForeignUidTree.create([CLI_MAIN]);
  try {
    const r = await within(start(tree.path(CLI_MAIN), [...rd(), 'status'], { uid: 65534, cwd: tree.dir }).done, 30000, 'status as nobody');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`permission denied on ${socketPath(d.runtimeDir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.match(r.stderr, /group.*kvmchan.*usermod -aG kvmchan/);
    assert.match(r.stderr, /\[KVMCHAN_E_NO_ACCESS\]$/m);
  } finally {
    tree.remove();
    fs.chmodSync(d.runtimeDir, 0o700);
  }
});

test('a closed output (status | head): no stack trace, exit 0', async () => {
  const held = await Promise.all([7410, 7411, 7412].map((port) => Vchan.listen({ runtimeDir: d.runtimeDir, port })));
  try {
    for (const args of [['status'], ['status', '--json']]) {
      const r = await kvmchan([...rd(), ...args], { closeStdout: true });
      assert.equal(r.stderr, '', `kvmchan ${args.join(' ')} into a closed pipe printed:\n${r.stderr}`);
      assert.equal(r.code, 0);
    }
  } finally {
    for (const v of held) v.close();
  }
});

/** A TMPDIR of its own for a demo: what it leaves behind is then plainly visible. */
function privateTmp(): { env: NodeJS.ProcessEnv; left: () => string[] } {
  const dir = fs.mkdtempSync(path.join(work, 'tmp-'));
  return { env: { ...process.env, TMPDIR: dir }, left: () => fs.readdirSync(dir).map((n) => path.join(dir, n)) };
}

function processesUsing(dirs: readonly string[]): number[] {
  const pids: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (dirs.some((dir) => cmd.includes(dir))) pids.push(Number(pid));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

test('demo into a closed output (demo | head): no stack trace, daemon stopped, temporary dirs removed', async () => {
  const tmp = privateTmp();
  const r = await kvmchan(['demo', '--size', '16M', '--guests', '1'], { closeStdout: true, env: tmp.env });
  assert.doesNotMatch(r.stderr, /\n\s+at /, `a stack trace:\n${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(tmp.left(), [], 'temporary directories left behind');
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`demo interrupted by ${signal}: exit ${signal === 'SIGINT' ? 130 : 143}, daemon stopped, temporary dirs removed`, async () => {
    const tmp = privateTmp();
    const demo = start(CLI_MAIN, ['demo', '--size', '1G', '--guests', '1'], { env: tmp.env });
    try {
      // Interrupt once the private daemons run and the transfer is under way.
      await waitFor(() => /vchan up/.test(demo.stdout()) || demo.child.exitCode !== null, 60000, 'demo under way', 20);
      const created = tmp.left();
      assert.ok(created.length > 0, `the demo created no temporary directory:\n${demo.stdout()}`);
      demo.child.kill(signal);
      const r = await within(demo.done, 60000, 'demo exit');
      assert.equal(r.code, signal === 'SIGINT' ? 130 : 143, r.stderr);
      assert.deepEqual(tmp.left(), [], 'temporary directories left behind');
      assert.deepEqual(processesUsing(created), [], 'processes of the demo left running');
    } finally {
      demo.child.kill('SIGKILL');
    }
  });
}
