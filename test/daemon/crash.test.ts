/**
 * Peer and daemon death (ring-protocol.md §6, docs/security.md): a SIGKILLed process's
 * vchans are closed for it by the daemon, the survivor drains what was written and then sees
 * end of stream; a SIGKILLed daemon makes every client fail loudly instead of hanging, and a
 * new daemon starts over the stale runtime files.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { DaemonConnection } from '../../src/client/daemon-connection.js';
import { Command } from '../../src/protocol/constants.js';
import { ClosedError, DaemonUnavailableError } from '../../src/errors.js';
import { PID_NAME, SOCKET_NAME } from '../../src/paths.js';
import { Pattern } from '../helpers/pattern.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { expectFdsBackTo, settledFds, sleep, startDaemon, teardown, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';

let d: TestDaemon;
before(async () => {
  d = await startDaemon();
});
after(() => teardown(() => d?.stop()));

async function vchanCount(runtimeDir: string): Promise<number> {
  const conn = await DaemonConnection.open(runtimeDir);
  try {
    return (await conn.request(Command.LIST_VCHANS, { start: 0 })).body.entries.length;
  } finally {
    conn.close();
  }
}

/** Reads until end of stream; returns everything read and when EOF came. */
async function drain(v: Vchan): Promise<{ data: Buffer; eofAt: number }> {
  const chunks: Buffer[] = [];
  for (;;) {
    const c = await v.read();
    if (c === null) return { data: Buffer.concat(chunks), eofAt: Date.now() };
    chunks.push(Buffer.from(c));
  }
}

function expectNoDaemon(err: unknown): true {
  assert.ok(err instanceof DaemonUnavailableError, `expected DaemonUnavailableError, got ${String(err)}`);
  assert.equal(err.code, 'KVMCHAN_E_NO_DAEMON');
  return true;
}

test('SIGKILL of a client with a full ring: the server drains every byte written, then sees end of stream', async (t) => {
  const daemonFds = await settledFds(d.daemon.pid);
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 10, readMin: 65536, writeMin: 1024 });
  const client = await PeerProcess.spawn(d.runtimeDir);
  let written = 0;
  client.on('progress', (m: { written: number }) => {
    written = m.written;
  });
  try {
    await client.ok({ op: 'connect', port: 10, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    void client.call({ op: 'source', seed: 77 });
    // We do not read: the writer fills the ring and blocks.
    await waitFor(() => server.dataReady() === server.readSize && written > 0, 10000, 'the client to fill the ring');
    await sleep(50);
    const before = written;
    const t0 = Date.now();
    await client.kill('SIGKILL');
    const { data, eofAt } = await within(drain(server), 5000, 'end of stream after the client was killed');
    t.diagnostic(`drained ${data.length} bytes, end of stream ${eofAt - t0} ms after the kill`);
    assert.ok(data.length >= server.readSize, `drained only ${data.length} bytes of a full ${server.readSize}-byte ring`);
    assert.ok(data.length >= before, `drained ${data.length} bytes, but the client had written ${before}`);
    assert.equal(new Pattern(77).mismatch(0, data), -1, 'drained bytes differ from what the client wrote');
    assert.equal(server.state, 'closed');
    await assert.rejects(server.write(Buffer.from('x')), ClosedError);
  } finally {
    server.close();
    await client.kill();
  }
  await expectFdsBackTo(d.daemon.pid, daemonFds, 5000, 'the daemon to release the dead vchan');
  assert.equal(await vchanCount(d.runtimeDir), 0);
});

test('SIGKILL of a client mid-stream while the server is reading: pending read ends with EOF, data intact', async () => {
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 11, readMin: 8192, writeMin: 1024 });
  const client = await PeerProcess.spawn(d.runtimeDir);
  let written = 0;
  client.on('progress', (m: { written: number }) => {
    written = m.written;
  });
  try {
    await client.ok({ op: 'connect', port: 11, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    void client.call({ op: 'source', seed: 78 });
    const reading = drain(server);
    await waitFor(() => written > 4 * 2 ** 20, 20000, 'a few MiB to flow');
    const before = written;
    await client.kill('SIGKILL');
    const { data } = await within(reading, 5000, 'the reading server to see end of stream');
    assert.ok(data.length >= before, `read ${data.length} bytes, but the client had written ${before}`);
    assert.equal(new Pattern(78).mismatch(0, data), -1, 'bytes read differ from what the client wrote');
  } finally {
    server.close();
    await client.kill();
  }
});

test('SIGKILL of a server process: the client drains, sees EOF, and its writes fail', async () => {
  const srv = await PeerProcess.spawn(d.runtimeDir);
  try {
    await srv.ok({ op: 'listen', port: 12, writeMin: 4096 });
    const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 12, timeout: 5000 });
    try {
      await srv.ok({ op: 'writePattern', seed: 79, bytes: 3000 });
      await srv.kill('SIGKILL');
      const { data } = await within(drain(client), 5000, 'end of stream after the server was killed');
      assert.deepEqual(data, new Pattern(79).slice(0, 3000));
      await assert.rejects(client.write(Buffer.from('x')), ClosedError);
    } finally {
      client.close();
    }
    // The killed server's port is free again.
    const again = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 12 });
    again.close();
  } finally {
    await srv.kill();
  }
});

test('SIGKILL of the daemon: pending and later operations fail with DaemonUnavailableError; a new daemon starts on the stale runtime dir', async (t) => {
  const victim = await startDaemon();
  const dir = victim.runtimeDir;
  const peer = await PeerProcess.spawn(dir);
  let restarted: TestDaemon | undefined;
  try {
    const server = await Vchan.listen({ runtimeDir: dir, port: 20 });
    const idle = await Vchan.listen({ runtimeDir: dir, port: 21 });
    const idleErrors: unknown[] = [];
    idle.on('error', (e: unknown) => idleErrors.push(e));
    await peer.ok({ op: 'connect', port: 20, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    const pendingRead = server.read().then(() => assert.fail('read resolved after the daemon died'), expectNoDaemon);
    const peerRecv = peer.call({ op: 'recv', size: 10 });
    await sleep(50);

    const t0 = Date.now();
    await victim.daemon.kill();
    await within(pendingRead, 3000, 'the pending read to fail');
    t.diagnostic(`pending read failed ${Date.now() - t0} ms after the daemon was killed`);
    const r = await within(peerRecv, 3000, "the other process's pending recv to fail");
    assert.equal(r.ok, false);
    assert.equal(r.error?.code, 'KVMCHAN_E_NO_DAEMON');
    // Later operations fail the same way, at once.
    await assert.rejects(server.write(Buffer.from('x')), expectNoDaemon);
    assert.throws(() => server.dataReady(), DaemonUnavailableError);
    assert.equal(server.state, 'closed');
    await waitFor(() => idleErrors.length > 0, 3000, "the idle vchan's error event");
    expectNoDaemon(idleErrors[0]);
    await assert.rejects(Vchan.listen({ runtimeDir: dir, port: 22 }), expectNoDaemon);
    await assert.rejects(Vchan.connect({ runtimeDir: dir, port: 20 }), expectNoDaemon);
    server.close();
    idle.close();

    // The dead daemon's socket and pid file are still there...
    assert.ok(fs.existsSync(`${dir}/${SOCKET_NAME}`), 'stale socket missing: the test would prove nothing');
    assert.equal(fs.readFileSync(`${dir}/${PID_NAME}`, 'utf8').trim(), String(victim.daemon.pid));
    // ...and do not block a new one.
    restarted = await startDaemon({ runtimeDir: dir });
    assert.equal(fs.readFileSync(`${dir}/${PID_NAME}`, 'utf8').trim(), String(restarted.daemon.pid));
    const s2 = await Vchan.listen({ runtimeDir: dir, port: 20 });
    try {
      await peer.ok({ op: 'connect', name: 'again', port: 20, timeout: 5000 });
      await s2.waitConnected({ timeout: 5000 });
      await s2.write(Buffer.from('back'));
      const got = await peer.ok({ op: 'recv', name: 'again', size: 4 });
      assert.equal(Buffer.from(got['data'] as string, 'base64').toString(), 'back');
    } finally {
      s2.close();
    }
  } finally {
    await peer.end();
    await restarted?.stop();
    await victim.stop();
  }
});

test('orderly daemon stop (SIGTERM): clients are told and fail with DaemonUnavailableError, the runtime dir is cleaned', async () => {
  const doomed = await startDaemon();
  const dir = doomed.runtimeDir;
  try {
    const server = await Vchan.listen({ runtimeDir: dir, port: 30 });
    const client = await Vchan.connect({ runtimeDir: dir, port: 30, timeout: 5000 });
    const pending = client.read().then(() => assert.fail('read resolved after the daemon stopped'), expectNoDaemon);
    await sleep(20);
    const code = await doomed.daemon.stop();
    assert.equal(code, 0, 'kvmchand should exit 0 on SIGTERM');
    await within(pending, 3000, 'the pending read to fail');
    await assert.rejects(server.write(Buffer.from('x')), expectNoDaemon);
    server.close();
    client.close();
    assert.equal(fs.existsSync(`${dir}/${SOCKET_NAME}`), false);
    assert.equal(fs.existsSync(`${dir}/${PID_NAME}`), false);
  } finally {
    await doomed.stop();
  }
});
