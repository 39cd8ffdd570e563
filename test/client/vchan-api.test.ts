/**
 * The TypeScript vchan API against the real daemon, with the far end in another process
 * (test/helpers/vchan-peer.ts): ring sizes, packet semantics at the ring boundary,
 * connect/wait/timeout/abort, the qubesdb re-init pattern, port conflicts, streams.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { AbortError, ClosedError, DaemonError, MessageTooLargeError, TimeoutError } from '../../src/errors.js';
import { Pattern } from '../helpers/pattern.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { Prng } from '../helpers/prng.js';
import { fdCount, sleep, startDaemon, teardown, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';

let d: TestDaemon;
let peer: PeerProcess;
before(async () => {
  d = await startDaemon();
  peer = await PeerProcess.spawn(d.runtimeDir);
});
after(() =>
  teardown(
    () => peer?.end(),
    () => d?.stop(),
  ),
);

interface Tracked<T> {
  settled: boolean;
  value?: T;
  error?: unknown;
  promise: Promise<T>;
}

/** Watches a promise so a test can ask "still pending?" without awaiting it. */
function track<T>(promise: Promise<T>): Tracked<T> {
  const t: Tracked<T> = { settled: false, promise };
  promise.then(
    (v) => {
      t.settled = true;
      t.value = v;
    },
    (e: unknown) => {
      t.settled = true;
      t.error = e;
    },
  );
  return t;
}

function listen(port: number, readMin = 0, writeMin = 0): Promise<Vchan> {
  return Vchan.listen({ runtimeDir: d.runtimeDir, port, readMin, writeMin });
}

const pow2AtLeast = (n: number): number => Math.max(1024, 2 ** Math.ceil(Math.log2(Math.max(1, n))));

test('buffer space right after init equals the real ring size, on both sides', async () => {
  const pairs: [number, number][] = [
    [0, 0],
    [128, 8192],
    [4096, 4096],
    [65536, 65536],
    [2 ** 20, 2 ** 20],
    [5000, 70000], // not powers of two: rounded up
  ];
  let port = 1000;
  for (const [readMin, writeMin] of pairs) {
    port++;
    const server = await listen(port, readMin, writeMin);
    try {
      const sRead = pow2AtLeast(readMin);
      const sWrite = pow2AtLeast(writeMin);
      assert.equal(server.readSize, sRead, `server read ring for (${readMin}, ${writeMin})`);
      assert.equal(server.writeSize, sWrite, `server write ring for (${readMin}, ${writeMin})`);
      assert.equal(server.bufferSpace(), sWrite, `server buffer_space after init for (${readMin}, ${writeMin})`);
      assert.equal(server.dataReady(), 0);
      const c = await peer.ok({ op: 'connect', port, timeout: 5000 });
      assert.equal(c['bufferSpace'], sRead, `client buffer_space after init for (${readMin}, ${writeMin})`);
      assert.equal(c['readSize'], sWrite);
      assert.equal(c['dataReady'], 0);
      await server.waitConnected({ timeout: 5000 });
      // The space is real: exactly that many bytes go in as one packet, and not one more.
      assert.equal(server.trySend(Buffer.alloc(sWrite, 0xa5)), true);
      assert.equal(server.bufferSpace(), 0);
      assert.equal(server.trySend(Buffer.alloc(1)), false);
      await peer.ok({ op: 'send', size: sRead, fill: 0x5a });
      await waitFor(() => server.dataReady() === sRead, 5000, 'the client packet to fill the server read ring');
      const st = await peer.ok({ op: 'state' });
      assert.equal(st['dataReady'], sWrite);
      assert.equal(st['bufferSpace'], 0);
    } finally {
      server.close();
      await peer.call({ op: 'close' });
    }
  }
});

test('packets at the ring boundary: ring-size packet passes whole, ring-size + 1 is MessageTooLargeError', async () => {
  const port = 1100;
  const server = await listen(port, 4096, 4096);
  try {
    await peer.ok({ op: 'connect', port, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    const pkt = new Pattern(7).slice(0, 4096);
    await within(server.send(pkt), 2000, 'send of exactly the ring size into an empty ring');
    const got = await peer.ok({ op: 'recv', size: 4096 });
    assert.deepEqual(Buffer.from(got['data'] as string, 'base64'), pkt);

    const big = Buffer.alloc(4097);
    await assert.rejects(server.send(big), (err: unknown) => {
      assert.ok(err instanceof MessageTooLargeError, `got ${String(err)}`);
      assert.equal(err.code, 'KVMCHAN_E_MSGSIZE');
      return true;
    });
    assert.throws(() => server.trySend(big), MessageTooLargeError);
    // Nothing of the refused packet reached the ring.
    const st = await peer.ok({ op: 'state' });
    assert.equal(st['dataReady'], 0);
    assert.equal(server.bufferSpace(), 4096);
    // A packet larger than the ring can never be received either.
    await assert.rejects(server.recv(4097), MessageTooLargeError);
    const refused = await peer.call({ op: 'send', size: 4097 });
    assert.equal(refused.ok, false);
    assert.equal(refused.error?.code, 'KVMCHAN_E_MSGSIZE');
    assert.equal(server.dataReady(), 0);
  } finally {
    server.close();
    await peer.call({ op: 'close' });
  }
});

test('recv waits for the whole packet; send waits for room for the whole packet', async () => {
  const port = 1101;
  const pattern = new Pattern(11);
  const server = await listen(port, 4096, 4096);
  try {
    await peer.ok({ op: 'connect', port, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });

    const recv = track(server.recv(3000));
    await peer.ok({ op: 'writePattern', seed: 11, at: 0, bytes: 1000 });
    await waitFor(() => server.dataReady() === 1000, 5000, 'the first 1000 bytes');
    await sleep(100);
    assert.equal(recv.settled, false, 'recv(3000) returned with only 1000 bytes in the ring');
    await peer.ok({ op: 'writePattern', seed: 11, at: 1000, bytes: 2000 });
    const whole = await within(recv.promise, 5000, 'recv(3000) after all 3000 bytes were written');
    assert.ok(whole !== null);
    assert.deepEqual(whole, pattern.slice(0, 3000));
    assert.equal(server.dataReady(), 0);

    // Room: 3000 of 4096 bytes in use, a 2000-byte packet must wait until 2000 are free.
    await server.write(Buffer.alloc(3000, 1));
    const send = track(server.send(Buffer.alloc(2000, 2)));
    await peer.ok({ op: 'recv', size: 500 });
    await sleep(100);
    assert.equal(send.settled, false, 'send(2000) went out with only 1596 bytes free');
    await peer.ok({ op: 'recv', size: 1000 });
    await within(send.promise, 5000, 'send(2000) after 2596 bytes were free');
    const rest = await peer.ok({ op: 'recv', size: 1500 + 2000 });
    const restBuf = Buffer.from(rest['data'] as string, 'base64');
    assert.deepEqual(restBuf, Buffer.concat([Buffer.alloc(1500, 1), Buffer.alloc(2000, 2)]));
  } finally {
    server.close();
    await peer.call({ op: 'close' });
  }
});

test('a client waits for a server that appears later', async () => {
  const port = 1200;
  const connect = track(peer.ok({ op: 'connect', port }));
  await sleep(300);
  assert.equal(connect.settled, false, 'connect returned before any server existed');
  const server = await listen(port);
  try {
    const c = await within(connect.promise, 5000, 'the waiting client to attach once the server appeared');
    assert.equal(c['role'], 'client');
    await within(server.waitConnected(), 5000, 'the server to see its client');
    assert.equal(server.state, 'connected');
    await peer.ok({ op: 'writePattern', seed: 3, bytes: 100 });
    const got = await server.recv(100);
    assert.deepEqual(got, new Pattern(3).slice(0, 100));
  } finally {
    server.close();
    await peer.call({ op: 'close' });
  }
});

test('connect timeout gives TimeoutError; timeout 0 fails at once; nothing leaks', async () => {
  const fds = fdCount('self');
  const t0 = Date.now();
  await assert.rejects(Vchan.connect({ runtimeDir: d.runtimeDir, port: 1300, timeout: 250 }), (err: unknown) => {
    assert.ok(err instanceof TimeoutError, `got ${String(err)}`);
    assert.equal(err.code, 'KVMCHAN_E_TIMEOUT');
    return true;
  });
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 240 && elapsed < 3000, `timeout of 250 ms took ${elapsed} ms`);
  await assert.rejects(Vchan.connect({ runtimeDir: d.runtimeDir, port: 1300, timeout: 0 }), (err: unknown) => {
    assert.ok(err instanceof DaemonError, `got ${String(err)}`);
    assert.equal(err.code, 'KVMCHAN_E_DAEMON_ENOENT');
    return true;
  });
  await waitFor(() => fdCount('self') === fds, 2000, 'the failed connects to release their sockets');
  // The waits are gone from the daemon too: a server on that port gets the next client.
  const server = await listen(1300);
  try {
    const c = await within(
      Vchan.connect({ runtimeDir: d.runtimeDir, port: 1300, timeout: 2000 }),
      4000,
      'a client connect after earlier ones timed out',
    );
    c.close();
  } finally {
    server.close();
  }
});

test('AbortSignal cancels a waiting connect, a pending read and waitConnected', async () => {
  const fds = fdCount('self');
  const t0 = Date.now();
  await assert.rejects(Vchan.connect({ runtimeDir: d.runtimeDir, port: 1400, signal: AbortSignal.timeout(200) }), (err: unknown) => {
    assert.ok(err instanceof AbortError, `got ${String(err)}`);
    assert.equal(err.code, 'KVMCHAN_E_ABORTED');
    return true;
  });
  assert.ok(Date.now() - t0 < 3000, 'abort took too long');
  const pre = new AbortController();
  pre.abort();
  await assert.rejects(Vchan.connect({ runtimeDir: d.runtimeDir, port: 1400, signal: pre.signal }), AbortError);
  await waitFor(() => fdCount('self') === fds, 2000, 'the aborted connects to release their sockets');

  // The abandoned wait must not swallow the vchan: the server gets the next real client.
  const server = await listen(1400);
  try {
    await assert.rejects(server.waitConnected({ timeout: 150 }), TimeoutError);
    const ac = new AbortController();
    const w = track(server.waitConnected({ signal: ac.signal }));
    ac.abort();
    await within(
      w.promise.catch(() => undefined),
      2000,
      'aborted waitConnected',
    );
    assert.ok(w.error instanceof AbortError, `waitConnected abort gave ${String(w.error)}`);

    await peer.ok({ op: 'connect', port: 1400, timeout: 2000 });
    await server.waitConnected({ timeout: 5000 });
    await assert.rejects(server.read(100, { signal: AbortSignal.timeout(100) }), AbortError);
    await assert.rejects(server.read(100, { signal: pre.signal }), (err: unknown) => {
      assert.ok(err instanceof AbortError, `an already aborted signal gave ${String(err)}`);
      assert.equal(err.code, 'KVMCHAN_E_ABORTED');
      return true;
    });
    // After an aborted read the vchan still works and loses nothing.
    await peer.ok({ op: 'writePattern', seed: 5, bytes: 64 });
    assert.deepEqual(await server.recv(64), new Pattern(5).slice(0, 64));
  } finally {
    server.close();
    await peer.call({ op: 'close' });
  }
});

test('server re-init on the same port after the client left (qubesdb pattern)', async () => {
  const port = 1500;
  const first = await PeerProcess.spawn(d.runtimeDir);
  const second = await PeerProcess.spawn(d.runtimeDir);
  try {
    let server = await listen(port);
    await first.ok({ op: 'connect', port, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    await first.ok({ op: 'writePattern', seed: 21, bytes: 500 });
    await first.ok({ op: 'close' });
    // The server drains what the client wrote, then sees end of stream.
    assert.deepEqual(await server.recv(500), new Pattern(21).slice(0, 500));
    assert.equal(await within(server.read(), 5000, 'end of stream after the client closed'), null);
    assert.equal(server.state, 'closed');
    await assert.rejects(server.write(Buffer.from('x')), ClosedError);

    // A new client that comes while the dead vchan still exists waits for the re-init.
    const connect = track(second.ok({ op: 'connect', port }));
    await sleep(200);
    assert.equal(connect.settled, false, 'a new client attached to a vchan whose client already left');
    server.close();
    server = await listen(port);
    try {
      await within(connect.promise, 5000, 'the new client to attach to the re-initialised server');
      await server.waitConnected({ timeout: 5000 });
      await second.ok({ op: 'writePattern', seed: 22, bytes: 300 });
      assert.deepEqual(await server.recv(300), new Pattern(22).slice(0, 300));
      await server.write(Buffer.from('pong'));
      const r = await second.ok({ op: 'recv', size: 4 });
      assert.equal(Buffer.from(r['data'] as string, 'base64').toString(), 'pong');
    } finally {
      server.close();
    }
  } finally {
    await Promise.all([first.end(), second.end()]);
  }
});

test('a port already served is refused with EEXIST, from this or another process, until it is closed', async () => {
  const port = 1600;
  const server = await listen(port);
  let closed = false;
  try {
    await assert.rejects(listen(port), (err: unknown) => {
      assert.ok(err instanceof DaemonError, `got ${String(err)}`);
      assert.equal(err.code, 'KVMCHAN_E_DAEMON_EEXIST');
      return true;
    });
    const other = await peer.call({ op: 'listen', name: 'dup', port });
    assert.equal(other.ok, false);
    assert.equal(other.error?.code, 'KVMCHAN_E_DAEMON_EEXIST');
    // The refusals did not disturb the original.
    assert.equal(server.state, 'waiting');
    server.close();
    closed = true;
    const again = await listen(port);
    again.close();
  } finally {
    if (!closed) server.close();
  }
});

test('a second client on a connected vchan: EBUSY without waiting, else it waits for the port to be served again; the first keeps working', async () => {
  const port = 1700;
  const server = await listen(port);
  let next: Vchan | undefined;
  try {
    await peer.ok({ op: 'connect', port, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    const t0 = Date.now();
    await assert.rejects(Vchan.connect({ runtimeDir: d.runtimeDir, port, timeout: 0 }), (err: unknown) => {
      assert.ok(err instanceof DaemonError, `got ${String(err)}`);
      assert.equal(err.code, 'KVMCHAN_E_DAEMON_EBUSY');
      return true;
    });
    assert.ok(Date.now() - t0 < 1000, 'EBUSY should be immediate, not after waiting');
    const second = track(Vchan.connect({ runtimeDir: d.runtimeDir, port, timeout: 10000 }));
    await server.write(Buffer.from('still here'));
    const r = await peer.ok({ op: 'recv', size: 10 });
    assert.equal(Buffer.from(r['data'] as string, 'base64').toString(), 'still here');
    assert.equal(second.settled, false, 'the waiting client must not get the connected vchan');
    // The owner serves the port again (what createServer does): the waiting client gets that one.
    next = await listen(port);
    const client2 = await within(second.promise, 5000, 'second client');
    await next.waitConnected({ timeout: 5000 });
    await client2.write(Buffer.from('second'));
    assert.equal((await next.recv(6))?.toString(), 'second');
    client2.close();
    assert.equal(server.state, 'connected', 'the first vchan is untouched');
  } finally {
    next?.close();
    server.close();
    await peer.call({ op: 'close' });
  }
});

test('stream(): a Duplex with backpressure carries 16 MiB byte-exact and closes the vchan when both sides are done; async iteration ends at EOF', async () => {
  const port = 1800;
  const total = 16 * 2 ** 20;
  const server = await listen(port, 8192, 8192);
  try {
    await peer.ok({ op: 'connect', port, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    // The peer reads exactly what we send, then closes: our readable side then ends.
    const sink = peer.ok({ op: 'sink', bytes: total, closeAfter: true });
    const rng = new Prng(99);
    const blocks = Array.from({ length: 64 }, () => Buffer.from(rng.bytes(256 * 1024)));
    const hash = createHash('sha256');
    for (const b of blocks) hash.update(b);
    const closed = new Promise<void>((resolve) => server.once('close', resolve));
    const duplex = server.stream();
    const ended = new Promise<void>((resolve, reject) => {
      duplex.on('end', resolve).on('error', reject);
    });
    duplex.resume();
    await within(pipeline(Readable.from(blocks), duplex), 30000, 'piping 16 MiB into the vchan stream');
    const got = await within(sink, 30000, 'the peer to read 16 MiB');
    assert.equal(got['received'], total);
    assert.equal(got['sha256'], hash.digest('hex'));
    await within(ended, 5000, 'the readable side to end after the peer closed');
    await within(closed, 5000, 'the vchan to close once both directions were done');
    assert.equal(server.state, 'closed');
  } finally {
    server.close();
    await peer.call({ op: 'close' });
  }

  const it = await listen(port + 1, 4096, 4096);
  try {
    await peer.ok({ op: 'connect', port: port + 1, timeout: 5000 });
    await it.waitConnected({ timeout: 5000 });
    const src = peer.ok({ op: 'source', seed: 31, bytes: 3 * 2 ** 20, closeAfter: true });
    const chunks: Buffer[] = [];
    for await (const chunk of it) chunks.push(Buffer.from(chunk));
    const all = Buffer.concat(chunks);
    const sent = await src;
    assert.equal(sent['written'], 3 * 2 ** 20);
    assert.equal(all.length, 3 * 2 ** 20);
    assert.equal(new Pattern(31).mismatch(0, all), -1);
  } finally {
    it.close();
    await peer.call({ op: 'close' });
  }
});

test('a connect timeout above 2^31-1 ms (3e9) keeps waiting: a server that comes later is reached', async () => {
  const port = 7311;
  // Node turns timers above 2^31-1 ms into 1 ms: the daemon would have answered ETIMEDOUT at once.
  const pending = Vchan.connect({ runtimeDir: d.runtimeDir, port, domain: 0, timeout: 3e9 });
  await sleep(300);
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port, domain: 0 });
  const client = await within(pending, 10_000, 'the long-timeout connect to complete');
  await server.waitConnected({ timeout: 5000 });
  client.close();
  server.close();
});
