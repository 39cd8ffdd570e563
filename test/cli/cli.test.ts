/**
 * The command lines as an operator uses them: `kvmchan listen|connect` (netcat over a vchan),
 * `kvmchan status`, `kvmchan demo`, argument errors, and `kvmchand` itself (help, a second
 * daemon on the same runtime dir).
 */
import assert from 'node:assert/strict';
import { spawn, type StdioOptions } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { DAEMON_MAIN } from '../../src/cli/private-daemon.js';
import { socketPath } from '../../src/paths.js';
import type { StatusJson } from '../../src/cli/status-json.js';
import { startDaemon, teardown, within, type TestDaemon } from '../helpers/daemon-fixture.js';

const CLI_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

interface RunOptions {
  /** A file to use as stdin, or bytes to pipe in (then end). Default: /dev/null. */
  stdinFile?: string;
  stdinData?: Buffer;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

function run(script: string, args: string[], opts: RunOptions = {}): Promise<Run> {
  let stdin: 'ignore' | 'pipe' | number = 'ignore';
  let fd: number | undefined;
  if (opts.stdinFile !== undefined) {
    fd = fs.openSync(opts.stdinFile, 'r');
    stdin = fd;
  } else if (opts.stdinData !== undefined) stdin = 'pipe';
  const stdio: StdioOptions = [stdin, 'pipe', 'pipe'];
  const child = spawn(process.execPath, [script, ...args], { stdio, env: opts.env ?? process.env });
  if (fd !== undefined) fs.closeSync(fd);
  if (opts.stdinData !== undefined) child.stdin!.end(opts.stdinData);
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const done = new Promise<Run>((resolve) => {
    child.once('close', (code, signal) => {
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
  });
  const limit = opts.timeoutMs ?? 30000;
  return within(done, limit, `${path.basename(script)} ${args.join(' ')}`).catch((e: unknown) => {
    child.kill('SIGKILL');
    throw new Error(`${(e as Error).message}; stderr so far: ${err}`, { cause: e });
  });
}

const kvmchan = (args: string[], opts?: RunOptions): Promise<Run> => run(CLI_MAIN, args, opts);
const kvmchand = (args: string[], opts?: RunOptions): Promise<Run> => run(DAEMON_MAIN, args, opts);

let d: TestDaemon;
let work: string;
before(async () => {
  d = await startDaemon();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-cli-'));
});
after(() =>
  teardown(
    () => d?.stop(),
    () => fs.rmSync(work, { recursive: true, force: true }),
  ),
);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('listen -N sends a piped random stream to connect, byte-exact; both exit 0', async () => {
  const data = randomBytes(16 * 2 ** 20 + 12345);
  const listener = kvmchan(['--runtime-dir', d.runtimeDir, 'listen', '7001', '-N'], { stdinData: data });
  const connector = kvmchan(['--runtime-dir', d.runtimeDir, 'connect', '7001']);
  const [l, c] = await Promise.all([listener, connector]);
  assert.equal(l.code, 0, `listen failed: ${l.stderr}`);
  assert.equal(c.code, 0, `connect failed: ${c.stderr}`);
  assert.equal(c.stdout.length, data.length);
  assert.equal(sha(c.stdout), sha(data), 'connect printed different bytes than listen was given');
  assert.equal(l.stdout.length, 0);
});

test('connect --close-on-eof sends a random file to listen, byte-exact; both exit 0', async () => {
  const file = path.join(work, 'random.bin');
  const data = randomBytes(8 * 2 ** 20 + 777);
  fs.writeFileSync(file, data);
  const listener = kvmchan(['--runtime-dir', d.runtimeDir, 'listen', '7002', '--read-min', '4096', '--write-min', '1024']);
  const connector = kvmchan(['--runtime-dir', d.runtimeDir, 'connect', '7002', '--close-on-eof', '-v'], { stdinFile: file });
  const [l, c] = await Promise.all([listener, connector]);
  assert.equal(c.code, 0, `connect failed: ${c.stderr}`);
  assert.equal(l.code, 0, `listen failed: ${l.stderr}`);
  assert.equal(sha(l.stdout), sha(data), 'listen printed different bytes than connect was given');
  assert.match(c.stderr, new RegExp(`sent ${data.length} bytes`), '-v reports the byte count');
});

test('KVMCHAN_RUNTIME_DIR works like --runtime-dir', async () => {
  const env = { ...process.env, KVMCHAN_RUNTIME_DIR: d.runtimeDir };
  const data = Buffer.from('hello over the environment\n');
  const [l, c] = await Promise.all([kvmchan(['listen', '7003', '-N'], { stdinData: data, env }), kvmchan(['connect', '7003'], { env })]);
  assert.equal(l.code, 0, l.stderr);
  assert.equal(c.code, 0, c.stderr);
  assert.deepEqual(c.stdout, data);
});

test('status lists the open vchans as a table and as JSON', async () => {
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7100, readMin: 8192, writeMin: 65536 });
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 7100, timeout: 5000 });
  const waiting = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7101 });
  try {
    await client.write(Buffer.alloc(3000));
    const table = await kvmchan(['--runtime-dir', d.runtimeDir, 'status']);
    assert.equal(table.code, 0, table.stderr);
    const text = table.stdout.toString();
    assert.match(text, /Vchans \(2\)/);
    const row = text.split('\n').find((l) => /\s7100\s/.test(l));
    assert.ok(row !== undefined, `no row for port 7100 in:\n${text}`);
    assert.match(row, /connected\s+connected/);
    assert.match(row, new RegExp(`${process.pid}/${process.pid}`));
    const row2 = text.split('\n').find((l) => /\s7101\s/.test(l));
    assert.ok(row2 !== undefined && /connected\s+waiting/.test(row2), `port 7101 should show a waiting client:\n${text}`);

    const json = await kvmchan(['--runtime-dir', d.runtimeDir, 'status', '--json']);
    assert.equal(json.code, 0, json.stderr);
    // The documented schema (docs/cli.md "status --json"): names, bytes, null for no pid.
    const st = JSON.parse(json.stdout.toString()) as StatusJson;
    assert.equal(st.version, 1);
    const host = st.domains.find((x) => x.id === 0);
    assert.equal(host?.vchans, 2);
    assert.equal(host?.host, true);
    const v = st.vchans.find((x) => x.port === 7100);
    assert.ok(v !== undefined);
    assert.equal(v.handle, server.handle);
    assert.equal(v.serverPid, process.pid);
    assert.equal(v.clientPid, process.pid);
    assert.equal(v.serverState, 'connected');
    assert.equal(v.clientState, 'connected');
    assert.deepEqual(v.ringBytes, { clientToServer: 8192, serverToClient: 65536 });
    assert.equal(v.bytes.clientToServer, 3000);
    const w = st.vchans.find((x) => x.port === 7101);
    assert.equal(w?.clientState, 'waiting');
    assert.equal(w?.clientPid, null, 'no client yet: null, not 0');
  } finally {
    client.close();
    server.close();
    waiting.close();
  }
});

test('demo --size 64M moves the data, checks it and cleans up; exit 0', async () => {
  const r = await kvmchan(['demo', '--size', '64M'], { timeoutMs: 60000 });
  assert.equal(r.code, 0, `demo failed: ${r.stderr}`);
  const out = r.stdout.toString();
  assert.match(out, /moved 64\.0 MiB .*SHA-256 matches/);
  assert.match(out, /round trip over 10000 pings/);
  assert.match(out, /cleaned up/);
  const dir = /in (\S+)\n/.exec(out)?.[1];
  assert.ok(dir !== undefined, `no runtime dir in:\n${out}`);
  assert.equal(fs.existsSync(dir), false, 'the demo left its private runtime dir behind');
});

test('bad arguments and failures exit non-zero with a clear message', async () => {
  const rd = ['--runtime-dir', d.runtimeDir];
  const cases: { args: string[]; message: RegExp }[] = [
    { args: [...rd, 'listen', 'notaport'], message: /port must be a non-negative integer, got 'notaport'/ },
    { args: [...rd, 'listen', '4294967296'], message: /port must be in \[0, 4294967295\]/ },
    { args: [...rd, 'connect', '1', '--timeout', 'soon'], message: /invalid time 'soon'/ },
    { args: [...rd, 'connect'], message: /missing required argument 'port'/ },
    { args: ['demo', '--size', '12Q'], message: /invalid size '12Q'/ },
    { args: ['frobnicate'], message: /unknown command 'frobnicate'/ },
    { args: [...rd, 'connect', '7200', '--timeout', '0'], message: /no server on port 7200 of domain 0 .*KVMCHAN_E_DAEMON_ENOENT/ },
    { args: [...rd, 'connect', '7200', '--timeout', '300ms'], message: /no server on port 7200 of domain 0 within 300 ms/ },
    { args: ['--runtime-dir', path.join(work, 'nothing-here'), 'status'], message: /cannot connect to kvmchand .*is kvmchand running/ },
  ];
  for (const c of cases) {
    const r = await kvmchan(c.args);
    assert.notEqual(r.code, 0, `kvmchan ${c.args.join(' ')} should fail`);
    assert.match(r.stderr, c.message, `kvmchan ${c.args.join(' ')}`);
  }
  // A port in use: the second listener is refused.
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7201 });
  try {
    const r = await kvmchan([...rd, 'listen', '7201']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /port 7201 toward domain 0 is already served .*KVMCHAN_E_DAEMON_EEXIST/);
  } finally {
    server.close();
  }
});

test('kvmchand --help describes the daemon and its options; bad options and configs are refused', async () => {
  const help = await kvmchand(['--help']);
  assert.equal(help.code, 0);
  const text = help.stdout.toString();
  assert.match(text, /Usage: kvmchand/);
  for (const opt of ['--runtime-dir', '--config', '--log-level', '--host']) assert.ok(text.includes(opt), `--help lacks ${opt}`);

  const bogus = await kvmchand(['--bogus']);
  assert.notEqual(bogus.code, 0);
  assert.match(bogus.stderr, /unknown option '--bogus'/);
  const noConfig = await kvmchand(['--runtime-dir', path.join(work, 'rd1'), '--config', path.join(work, 'missing.json')]);
  assert.equal(noConfig.code, 1);
  assert.match(noConfig.stderr, /cannot read config/);
  const badConfigFile = path.join(work, 'bad.json');
  fs.writeFileSync(badConfigFile, JSON.stringify({ limits: { handshakeTimeoutMs: 5, frobs: 1 } }));
  const badConfig = await kvmchand(['--runtime-dir', path.join(work, 'rd2'), '--config', badConfigFile]);
  assert.equal(badConfig.code, 1);
  assert.match(badConfig.stderr, /invalid configuration: .*handshakeTimeoutMs/);
});

test('a second kvmchand on the same runtime dir is refused (exit 1) and the first keeps serving', async () => {
  const second = await kvmchand(['--runtime-dir', d.runtimeDir], { timeoutMs: 15000 });
  assert.equal(second.code, 1, `second daemon: code ${second.code}, stderr ${second.stderr}`);
  assert.match(
    second.stderr,
    new RegExp(`another kvmchand \\(pid ${d.daemon.pid}\\) is running on ${d.runtimeDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
  );
  assert.ok(fs.existsSync(socketPath(d.runtimeDir)), 'the refused daemon removed the running one’s socket');
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7300 });
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 7300, timeout: 2000 });
  await client.write(Buffer.from('ok'));
  assert.equal((await server.recv(2))?.toString(), 'ok');
  client.close();
  server.close();
});
