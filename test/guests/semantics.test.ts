/**
 * vchan semantics across domains are those of host vchans (docs/api.md "Semantics"): a client waits for a
 * server that appears later (host client / guest server and the reverse, and guest↔guest),
 * timeouts and refusals, server re-init on the same port after its client left (the qubesdb
 * reconnect), EEXIST / EBUSY, close seen from the other domain, and the death of a guest-side
 * application mid-stream (the host-side peer drains, then sees end of stream).
 *
 * The host has three simulated guests; policy allows 1↔2 only. This test process is a host
 * application when it passes the host's runtime dir and a guest application when it passes a
 * guest daemon's.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { ClosedError, DaemonError, TimeoutError } from '../../src/errors.js';
import { Pattern } from '../helpers/pattern.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { settledFds, sleep, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';
import { cliStatus, expectHostFds, poolsCreated, startGuests, startHost, type TestGuest } from '../helpers/guest-fixture.js';

let host: TestDaemon;
let g1: TestGuest;
let g2: TestGuest;
let g3: TestGuest;
let hostFds: Map<string, string>;
let poolsAtStart: number;

before(async () => {
  host = await startHost({ guests: 3, guestPairs: [[1, 2]] });
  [g1, g2, g3] = (await startGuests(host, 3)) as [TestGuest, TestGuest, TestGuest];
  hostFds = await settledFds(host.daemon.pid);
  poolsAtStart = poolsCreated(host.log()).length;
});
after(async () => {
  for (const g of [g1, g2, g3]) await g?.stop();
  await host?.stop();
});

/** Reads until end of stream; everything read. */
async function drain(v: Vchan): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (;;) {
    const c = await v.read();
    if (c === null) return Buffer.concat(chunks);
    chunks.push(Buffer.from(c));
  }
}

function daemonErrno(name: string): (err: unknown) => true {
  return (err: unknown) => {
    assert.ok(err instanceof DaemonError, `expected a DaemonError, got ${String(err)}`);
    assert.equal(err.code, `KVMCHAN_E_DAEMON_${name}`, err.message);
    return true;
  };
}

/** One message each way between two endpoints. */
async function pingPong(a: Vchan, b: Vchan, tag: string): Promise<void> {
  const ab = Buffer.from(`${tag}: a→b`);
  const ba = Buffer.from(`${tag}: b→a, a little longer`);
  await a.send(ab);
  assert.deepEqual(await b.recv(ab.length), ab);
  await b.send(ba);
  assert.deepEqual(await a.recv(ba.length), ba);
}

test('a host client waits for a guest server that appears later, and a guest client for a host server', async () => {
  // Host client first, then the server in guest 1.
  const t0 = Date.now();
  const connecting = Vchan.connect({ runtimeDir: host.runtimeDir, domain: 1, port: 200, timeout: 20000 });
  await sleep(300);
  const server = await Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 0, port: 200 });
  const client = await within(connecting, 5000, 'the waiting host client to connect');
  assert.ok(Date.now() - t0 >= 300, 'the client connected before the server existed');
  try {
    await server.waitConnected({ timeout: 5000 });
    assert.equal(client.localDomain, 0);
    assert.equal(client.peerDomain, 1);
    assert.equal(server.localDomain, 1);
    assert.equal(server.peerDomain, 0);
    assert.equal(client.handle, server.handle, 'both ends name the same host vchan');
    await pingPong(server, client, 'guest server / host client');
  } finally {
    client.close();
    server.close();
  }

  // Guest client first (another process in guest 1), then the server on the host.
  const peer = await PeerProcess.spawn(g1.runtimeDir);
  try {
    const waiting = peer.ok({ op: 'connect', domain: 0, port: 201, timeout: 20000 });
    await sleep(300);
    const hs = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 1, port: 201 });
    try {
      await within(waiting, 5000, 'the waiting guest client to connect');
      await hs.waitConnected({ timeout: 5000 });
      await hs.write(Buffer.from('from the host'));
      const got = await peer.ok({ op: 'recv', size: 13 });
      assert.equal(Buffer.from(got['data'] as string, 'base64').toString(), 'from the host');
      await peer.ok({ op: 'write', data: Buffer.from('from guest 1').toString('base64') });
      assert.equal((await hs.recv(12))?.toString(), 'from guest 1');
    } finally {
      hs.close();
    }
  } finally {
    await peer.end();
  }
});

test('a guest 2 client waits for a guest 1 server that appears later (pair pool)', async () => {
  const connecting = Vchan.connect({ runtimeDir: g2.runtimeDir, domain: 1, port: 202, timeout: 20000 });
  await sleep(300);
  const server = await Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 2, port: 202 });
  const client = await within(connecting, 5000, 'the waiting guest 2 client to connect');
  try {
    await server.waitConnected({ timeout: 5000 });
    assert.equal(client.localDomain, 2);
    assert.equal(client.peerDomain, 1);
    await pingPong(server, client, 'guest 1 server / guest 2 client');
  } finally {
    client.close();
    server.close();
  }
});

test('timeouts and refusals across domains', async () => {
  // A client waiting in the host for a guest server that never comes.
  const t0 = Date.now();
  await assert.rejects(Vchan.connect({ runtimeDir: host.runtimeDir, domain: 1, port: 210, timeout: 300 }), TimeoutError);
  assert.ok(Date.now() - t0 >= 290);
  // The same from inside a guest (the wait happens in the host's registry, via the control channel).
  await assert.rejects(Vchan.connect({ runtimeDir: g1.runtimeDir, domain: 0, port: 210, timeout: 300 }), TimeoutError);
  await assert.rejects(Vchan.connect({ runtimeDir: g1.runtimeDir, domain: 0, port: 210, timeout: 0 }), daemonErrno('ENOENT'));
  // Unknown domains, asked from both sides.
  await assert.rejects(Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 9, port: 211 }), daemonErrno('ESRCH'));
  await assert.rejects(Vchan.connect({ runtimeDir: host.runtimeDir, domain: 9, port: 211, timeout: 0 }), daemonErrno('ESRCH'));
  // Policy: 1↔3 is not a configured pair, either way, server or client.
  await assert.rejects(Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 3, port: 212 }), daemonErrno('EPERM'));
  await assert.rejects(Vchan.listen({ runtimeDir: g3.runtimeDir, domain: 1, port: 212 }), daemonErrno('EPERM'));
  await assert.rejects(Vchan.connect({ runtimeDir: g3.runtimeDir, domain: 1, port: 212, timeout: 0 }), daemonErrno('EPERM'));
  // A guest cannot reach itself through the host.
  await assert.rejects(Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 1, port: 213 }), daemonErrno('EPERM'));
  // Guest 3 and the host still talk.
  const s = await Vchan.listen({ runtimeDir: g3.runtimeDir, domain: 0, port: 214 });
  const c = await Vchan.connect({ runtimeDir: host.runtimeDir, domain: 3, port: 214, timeout: 5000 });
  try {
    await pingPong(s, c, 'guest 3 / host');
  } finally {
    c.close();
    s.close();
  }
});

test('EEXIST and EBUSY across domains; a server re-inits on the same port after its client left (qubesdb)', async () => {
  const server = await PeerProcess.spawn(g1.runtimeDir);
  try {
    for (let round = 0; round < 3; round++) {
      await server.ok({ op: 'listen', name: `s${round}`, domain: 0, port: 220, writeMin: 4096 });
      if (round === 0) {
        // The port is taken in guest 1 toward the host...
        await assert.rejects(Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 0, port: 220 }), daemonErrno('EEXIST'));
        // ...but a server toward guest 2 on the same port number is another vchan.
        const other = await Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 2, port: 220 });
        other.close();
      }
      const client = await Vchan.connect({ runtimeDir: host.runtimeDir, domain: 1, port: 220, timeout: 5000 });
      await server.ok({ op: 'waitConnected', name: `s${round}` });
      if (round === 0) {
        await assert.rejects(Vchan.connect({ runtimeDir: host.runtimeDir, domain: 1, port: 220, timeout: 0 }), daemonErrno('EBUSY'));
      }
      await server.ok({ op: 'writePattern', name: `s${round}`, seed: 220 + round, bytes: 3000 });
      assert.deepEqual(await client.recv(3000), new Pattern(220 + round).slice(0, 3000));
      await client.send(Buffer.from(`round ${round}`));
      const got = await server.ok({ op: 'recv', name: `s${round}`, size: 7 });
      assert.equal(Buffer.from(got['data'] as string, 'base64').toString(), `round ${round}`);
      // The client leaves; the server sees it, closes and serves the port again.
      client.close();
      const eof = await server.ok({ op: 'recv', name: `s${round}`, size: 1 });
      assert.equal(eof['eof'], true);
      await server.ok({ op: 'close', name: `s${round}` });
    }
  } finally {
    await server.end();
  }

  // The other way round: the server in the host, its client in guest 2.
  let hs = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 2, port: 221 });
  try {
    for (let round = 0; round < 3; round++) {
      const gc = await Vchan.connect({ runtimeDir: g2.runtimeDir, domain: 0, port: 221, timeout: 5000 });
      await hs.waitConnected({ timeout: 5000 });
      await pingPong(hs, gc, `re-init round ${round}`);
      gc.close();
      assert.equal(await hs.read(), null, 'the server sees its guest client leave');
      hs.close();
      hs = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 2, port: 221 });
    }
  } finally {
    hs.close();
  }
});

test('close across domains: the survivor drains what was sent, then sees end of stream; writes fail', async () => {
  // Guest client closes: the host server drains, then EOF.
  const hs = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 1, port: 230, readMin: 65536 });
  const gc = await Vchan.connect({ runtimeDir: g1.runtimeDir, domain: 0, port: 230, timeout: 5000 });
  await hs.waitConnected({ timeout: 5000 });
  const data = new Pattern(230).slice(0, 50000);
  await gc.write(data);
  gc.close();
  assert.equal(gc.state, 'closed');
  assert.deepEqual(await within(drain(hs), 5000, 'the host server to drain'), data);
  assert.equal(hs.state, 'closed');
  await assert.rejects(hs.write(Buffer.from('x')), ClosedError);
  hs.close();

  // Guest 1 server closes: the guest 2 client drains, then EOF.
  const gs = await Vchan.listen({ runtimeDir: g1.runtimeDir, domain: 2, port: 231, writeMin: 65536 });
  const g2c = await Vchan.connect({ runtimeDir: g2.runtimeDir, domain: 1, port: 231, timeout: 5000 });
  await gs.waitConnected({ timeout: 5000 });
  const more = new Pattern(231).slice(0, 40000);
  await gs.write(more);
  gs.close();
  assert.deepEqual(await within(drain(g2c), 5000, 'the guest 2 client to drain'), more);
  await assert.rejects(g2c.write(Buffer.from('x')), ClosedError);
  g2c.close();
});

test('SIGKILL of a guest application mid-stream: the host peer drains every byte, then sees end of stream', async (t) => {
  // Client application in guest 1 writing to a host server.
  {
    const hs = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 1, port: 240, readMin: 65536 });
    const app = await PeerProcess.spawn(g1.runtimeDir);
    let written = 0;
    app.on('progress', (m: { written: number }) => {
      written = m.written;
    });
    try {
      await app.ok({ op: 'connect', domain: 0, port: 240, timeout: 5000 });
      await hs.waitConnected({ timeout: 5000 });
      void app.call({ op: 'source', seed: 240 });
      const reading = drain(hs);
      await waitFor(() => written > 8 * 2 ** 20, 20000, 'a few MiB to flow from guest 1');
      const before = written;
      const t0 = Date.now();
      await app.kill('SIGKILL');
      const data = await within(reading, 10000, 'end of stream after the guest application was killed');
      t.diagnostic(`guest client killed: host server drained ${data.length} bytes, EOF ${Date.now() - t0} ms after the kill`);
      assert.ok(data.length >= before, `read ${data.length} bytes, but the guest application had written ${before}`);
      assert.equal(new Pattern(240).mismatch(0, data), -1, 'bytes read differ from what the guest application wrote');
      assert.equal(hs.state, 'closed');
      await assert.rejects(hs.write(Buffer.from('x')), ClosedError);
    } finally {
      hs.close();
      await app.kill();
    }
  }
  // Server application in guest 1 with a full ring toward a host client that was not reading.
  {
    const app = await PeerProcess.spawn(g1.runtimeDir);
    let written = 0;
    app.on('progress', (m: { written: number }) => {
      written = m.written;
    });
    try {
      await app.ok({ op: 'listen', domain: 0, port: 241, writeMin: 65536 });
      const hc = await Vchan.connect({ runtimeDir: host.runtimeDir, domain: 1, port: 241, timeout: 5000 });
      try {
        await app.ok({ op: 'waitConnected' });
        void app.call({ op: 'source', seed: 241 });
        await waitFor(() => hc.dataReady() === hc.readSize && written > 0, 10000, 'the guest server to fill the ring');
        await sleep(50);
        const before = written;
        await app.kill('SIGKILL');
        const data = await within(drain(hc), 10000, 'end of stream after the guest server was killed');
        assert.ok(data.length >= Math.max(before, hc.readSize), `drained ${data.length} bytes (written ${before}, ring ${hc.readSize})`);
        assert.equal(new Pattern(241).mismatch(0, data), -1);
        await assert.rejects(hc.write(Buffer.from('x')), ClosedError);
      } finally {
        hc.close();
      }
    } finally {
      await app.kill();
    }
  }
  // Guest 1 application killed while sending to guest 2.
  {
    const src = await PeerProcess.spawn(g1.runtimeDir);
    const dst = await PeerProcess.spawn(g2.runtimeDir);
    let written = 0;
    src.on('progress', (m: { written: number }) => {
      written = m.written;
    });
    try {
      await dst.ok({ op: 'listen', domain: 1, port: 242, readMin: 65536 });
      await src.ok({ op: 'connect', domain: 2, port: 242, timeout: 5000 });
      await dst.ok({ op: 'waitConnected' });
      void src.call({ op: 'source', seed: 242 });
      const sink = dst.ok({ op: 'sink', seed: 242 });
      await waitFor(() => written > 4 * 2 ** 20, 20000, 'a few MiB to flow from guest 1 to guest 2');
      const before = written;
      await src.kill('SIGKILL');
      const r = await within(sink, 10000, 'guest 2 to see end of stream');
      assert.equal(r['error'], null);
      assert.equal(r['mismatchAt'], -1);
      assert.ok(Number(r['received']) >= before);
    } finally {
      await src.kill();
      await dst.end();
    }
  }
});

test('a guest client killed while it waits is forgotten: the server that appears later gets the next client', async () => {
  const app = await PeerProcess.spawn(g1.runtimeDir);
  const waiting = app.call({ op: 'connect', domain: 0, port: 250, timeout: 60000 });
  await sleep(200);
  await app.kill('SIGKILL');
  assert.equal((await waiting).ok, false);
  await sleep(100);
  const hs = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 1, port: 250 });
  try {
    await sleep(100);
    assert.equal(hs.state, 'waiting', 'the dead waiter was attached to the new server');
    const gc = await Vchan.connect({ runtimeDir: g1.runtimeDir, domain: 0, port: 250, timeout: 5000 });
    await hs.waitConnected({ timeout: 5000 });
    await pingPong(hs, gc, 'after a dead waiter');
    gc.close();
  } finally {
    hs.close();
  }
});

test('afterwards: no vchan left in any domain; the host daemon holds the fds it started with, plus the pools it added', async () => {
  for (const dir of [host.runtimeDir, g1.runtimeDir, g2.runtimeDir, g3.runtimeDir]) {
    const st = await cliStatus(dir);
    assert.deepEqual(st.vchans, [], `vchans left in ${dir}`);
  }
  // One host pool per guest existed from the start; the 1↔2 pair pool appeared with the first
  // guest↔guest request and is kept for reuse.
  const added = poolsCreated(host.log()).slice(poolsAtStart);
  assert.deepEqual(
    added.map((p) => p.members),
    [[1, 2]],
  );
  await expectHostFds(host.daemon.pid, hostFds, added, 5000, 'the host daemon to release every vchan');
});
