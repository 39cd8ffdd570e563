/**
 * `kvmchan proxy` both ways (docs/cli.md "proxy"), as two real CLI processes across a simulated
 * guest: on the host, a TCP listener whose connections become vchans to domain 1; in the
 * guest, that vchan port served and each vchan connected to a real node:http server. A real
 * HTTP client then talks to the server through both, many connections at once (loopback only).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { CLI_MAIN, startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';
import { teardown, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';
import { Prng } from '../helpers/prng.js';

const SEED = 1205;
let host: TestDaemon;
let guest: TestGuest;
let web: http.Server;
let webPort: number;
const procs: ChildProcess[] = [];

interface Running {
  child: ChildProcess;
  stderr: () => string;
  address: string;
}

/** Starts `kvmchan proxy FROM TO` and resolves with the address it reports. */
async function proxy(runtimeDir: string, from: string, to: string, ...extra: string[]): Promise<Running> {
  const child = spawn(process.execPath, [CLI_MAIN, '--runtime-dir', runtimeDir, 'proxy', '-v', ...extra, from, to], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  procs.push(child);
  let err = '';
  child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  await waitFor(() => / → /.test(err) || child.exitCode !== null, 20000, `proxy ${from} → ${to} to start`);
  const m = /kvmchan proxy: (\S+) → /.exec(err);
  assert.ok(m !== null, `proxy did not start: ${err}`);
  return { child, stderr: () => err, address: m[1] ?? '' };
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

before(async () => {
  host = await startHost({ guests: 1 });
  guest = await startGuest(host, 1);
  // An echo service that says who it is: the body comes back with its SHA-256 in a header.
  web = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.setHeader('x-sha256', createHash('sha256').update(body).digest('hex'));
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  webPort = (web.address() as AddressInfo).port;
});

after(() =>
  teardown(
    () => procs.forEach((p) => p.exitCode === null && p.kill('SIGKILL')),
    () => new Promise<void>((resolve) => web?.close(() => resolve())),
    () => guest?.stop(),
    () => host?.stop(),
  ),
);

function request(port: number, body: Buffer, agent: http.Agent): Promise<{ status: number; body: Buffer; sha: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: 'POST', path: '/', agent, headers: { 'content-length': body.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), sha: String(res.headers['x-sha256']) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('HTTP through kvmchan proxy host → guest: many concurrent connections, bodies intact; SIGTERM cleans up', async () => {
  const inGuest = await proxy(guest.runtimeDir, 'vchan:0:8080', `tcp:127.0.0.1:${webPort}`);
  const onHost = await proxy(host.runtimeDir, 'tcp:127.0.0.1:0', 'vchan:1:8080');
  const port = Number(/:(\d+)$/.exec(onHost.address)?.[1]);
  assert.ok(port > 0, onHost.address);

  const rng = new Prng(SEED);
  const bodies = Array.from({ length: 24 }, (_, i) => {
    const size = i === 0 ? 3 * 2 ** 20 : rng.int(0, 200_000);
    const b = Buffer.alloc(size);
    for (let j = 0; j < size; j += 4096) b[j] = rng.below(256);
    return b;
  });
  // One connection per request (no keep-alive), all at once: 24 vchans side by side.
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  try {
    const replies = await within(Promise.all(bodies.map((b) => request(port, b, agent))), 120000, 'HTTP replies');
    replies.forEach((r, i) => {
      const body = bodies[i] as Buffer;
      assert.equal(r.status, 200, `request ${i} (seed ${SEED})`);
      assert.equal(r.sha, createHash('sha256').update(body).digest('hex'), `server got request ${i} whole (seed ${SEED})`);
      assert.ok(r.body.equals(body), `reply ${i} intact (seed ${SEED})`);
    });
    // Keep-alive: several requests on one connection (one vchan), then the connection closes.
    const keep = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 5; i++) {
      const r = await request(port, Buffer.from(`request ${i}`), keep);
      assert.equal(r.body.toString(), `request ${i}`);
    }
    keep.destroy();
  } finally {
    agent.destroy();
  }

  onHost.child.kill('SIGTERM');
  inGuest.child.kill('SIGTERM');
  assert.equal(await within(exited(onHost.child), 20000, 'host proxy exit'), 143);
  assert.equal(await within(exited(inGuest.child), 20000, 'guest proxy exit'), 143);
  assert.doesNotMatch(onHost.stderr() + inGuest.stderr(), /failed|Error/, 'no connection failed');
});

test('proxy: a connection whose vchan server is absent is closed, the proxy keeps serving', async () => {
  const onHost = await proxy(host.runtimeDir, 'tcp:127.0.0.1:0', 'vchan:1:9999', '-t', '500ms');
  try {
    const port = Number(/:(\d+)$/.exec(onHost.address)?.[1]);
    // Nobody serves the port: after -t the client sees its connection end, not a hang.
    const agent = new http.Agent({ keepAlive: false });
    await assert.rejects(within(request(port, Buffer.from('x'), agent), 60000, 'refused request'));
    agent.destroy();
    assert.equal(onHost.child.exitCode, null, 'the proxy still runs');
    assert.match(onHost.stderr(), /cannot reach vchan:1:9999/);
  } finally {
    onHost.child.kill('SIGTERM');
    await exited(onHost.child);
  }
});

test('proxy: bad addresses are usage errors', async () => {
  for (const args of [
    ['tcp:1', 'tcp:2'],
    ['vchan:1', 'vchan:2'],
    ['bogus:1', 'vchan:1'],
  ]) {
    const child = spawn(process.execPath, [CLI_MAIN, '--runtime-dir', host.runtimeDir, 'proxy', ...(args as [string, string])], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const code = await exited(child);
    assert.equal(code, 2, `${args.join(' ')}: ${err}`);
    assert.match(err, /^kvmchan: .*\n.*--help/m);
  }
});
