/**
 * Malformed and hostile local clients on raw seqpacket sockets (wire-protocol.md §3.1, §5;
 * docs/security.md): well-framed errors are answered and the connection stays up, framing errors
 * close that connection only, received fds are never leaked, silent clients are dropped after
 * the handshake timeout — while a vchan between two other processes keeps transferring and
 * the daemon carries on.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { native } from '../../src/native.js';
import { Command, Errno, MAX_PAYLOAD } from '../../src/protocol/constants.js';
import { encodeRequest } from '../../src/protocol/codec.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import {
  expectFdsBackTo,
  RawClient,
  rawFrame,
  settledFds,
  sleep,
  startDaemon,
  teardown,
  waitFor,
  within,
  words,
  type RawReply,
  type TestDaemon,
} from '../helpers/daemon-fixture.js';

const HANDSHAKE_MS = 400;
const SEED = seedFromEnv(0xbad5eed);

let d: TestDaemon;
let source: PeerProcess;
let sink: PeerProcess;
let written = 0;
let sinkResult: Promise<Record<string, unknown>>;
let sourceResult: Promise<Record<string, unknown>>;
let baselineFds: Map<string, string>;

before(async () => {
  d = await startDaemon({ config: { limits: { handshakeTimeoutMs: HANDSHAKE_MS } } });
  // A vchan between two other processes that keeps moving data through all the abuse below.
  source = await PeerProcess.spawn(d.runtimeDir);
  sink = await PeerProcess.spawn(d.runtimeDir);
  source.on('progress', (m: { written: number }) => {
    written = m.written;
  });
  await source.ok({ op: 'listen', port: 1, readMin: 65536, writeMin: 65536 });
  await sink.ok({ op: 'connect', port: 1, timeout: 5000 });
  await source.ok({ op: 'waitConnected' });
  // call(), not ok(): never rejects, so a filtered run that skips the last test stays quiet.
  sourceResult = source.call({ op: 'source', seed: 1234, closeAfter: true });
  sinkResult = sink.call({ op: 'sink', seed: 1234 });
  await waitFor(() => written > 0, 5000, 'the background transfer to start');
  baselineFds = await settledFds(d.daemon.pid);
});

after(() =>
  teardown(
    () => source?.end(),
    () => sink?.end(),
    () => d?.stop(),
  ),
);

function alive(): void {
  assert.equal(d.daemon.child.exitCode, null, `kvmchand exited: ${d.log().slice(-2000)}`);
  assert.equal(d.daemon.child.signalCode, null);
}

/** A fresh connection still gets GET_VERSION answered: the daemon is serving. */
async function serving(): Promise<void> {
  const c = new RawClient(d.runtimeDir);
  try {
    assert.ok(c.send(encodeRequest(Command.GET_VERSION, 1, {})));
    const r = await c.reply();
    assert.equal(r.err, 0);
    assert.equal(r.data.readUInt32LE(16), 1, 'version');
  } finally {
    c.close();
  }
}

function expectErr(r: RawReply, id: number, seq: number, errno: number): void {
  assert.equal(r.id, id, 'reply id');
  assert.equal(r.seq, seq, 'reply seq');
  assert.equal(r.err, -errno, `reply err for id 0x${id.toString(16)}`);
  assert.equal(r.size, 8, 'an error reply carries nothing after {err, pad}');
  assert.equal(r.fds.length, 0);
}

test('well-framed bad requests get -EINVAL / -ENOSYS and the connection stays up', async () => {
  const c = new RawClient(d.runtimeDir);
  try {
    let seq = 0xfffffffd; // seq wraps past 2^32 on the way (wire-protocol.md §4.1)
    const next = (): number => {
      const s = seq;
      seq = (seq + 1) >>> 0;
      return s;
    };
    let s = next();
    c.send(encodeRequest(Command.GET_VERSION, s, {}));
    assert.equal((await c.reply()).err, 0);

    // Non-zero padding: CHECK_COMMAND {u16 id, u16 pad, u32 pad}.
    s = next();
    c.send(rawFrame(Command.CHECK_COMMAND, s, Buffer.from([0x01, 0x00, 0x01, 0x00, 0, 0, 0, 0])));
    expectErr(await c.reply(), Command.CHECK_COMMAND, s, Errno.EINVAL);
    s = next();
    c.send(rawFrame(Command.CHECK_COMMAND, s, Buffer.from([0x01, 0x00, 0, 0, 0, 0, 0, 0x80])));
    expectErr(await c.reply(), Command.CHECK_COMMAND, s, Errno.EINVAL);
    // VCHAN_CLOSE {u32 handle, u32 pad} with pad set.
    s = next();
    c.send(rawFrame(Command.VCHAN_CLOSE, s, words(1, 7)));
    expectErr(await c.reply(), Command.VCHAN_CLOSE, s, Errno.EINVAL);
    // LIST_VCHANS with pad set.
    s = next();
    c.send(rawFrame(Command.LIST_VCHANS, s, words(0, 1)));
    expectErr(await c.reply(), Command.LIST_VCHANS, s, Errno.EINVAL);
    // VCHAN_CLIENT_INIT with an undefined flag.
    s = next();
    c.send(rawFrame(Command.VCHAN_CLIENT_INIT, s, words(0, 5, 0, 1)));
    expectErr(await c.reply(), Command.VCHAN_CLIENT_INIT, s, Errno.EINVAL);
    // Wrong payload lengths.
    s = next();
    c.send(rawFrame(Command.GET_VERSION, s, words(0)));
    expectErr(await c.reply(), Command.GET_VERSION, s, Errno.EINVAL);
    s = next();
    c.send(rawFrame(Command.VCHAN_SERVER_INIT, s, words(0, 5, 0)));
    expectErr(await c.reply(), Command.VCHAN_SERVER_INIT, s, Errno.EINVAL);
    // Unknown ids, reserved ranges included: -ENOSYS repeating the id.
    for (const id of [0x7777, 0x0000, 0x0003, 0x0035, 0x003f, 0x0100, 0x01ff, 0x7fff]) {
      s = next();
      c.send(rawFrame(id, s, Buffer.alloc(8)));
      expectErr(await c.reply(), id, s, Errno.ENOSYS);
    }
    // CHECK_COMMAND answers for others: known → 0, unknown → -ENOSYS.
    s = next();
    c.send(encodeRequest(Command.CHECK_COMMAND, s, { id: Command.VCHAN_SERVER_INIT }));
    assert.equal((await c.reply()).err, 0);
    s = next();
    c.send(encodeRequest(Command.CHECK_COMMAND, s, { id: 0x7777 }));
    expectErr(await c.reply(), Command.CHECK_COMMAND, s, Errno.ENOSYS);
    // Command errors: closing a handle we do not hold, an unserved port.
    s = next();
    c.send(encodeRequest(Command.VCHAN_CLOSE, s, { handle: 0x7fffffff }));
    expectErr(await c.reply(), Command.VCHAN_CLOSE, s, Errno.ENOENT);
    s = next();
    c.send(encodeRequest(Command.VCHAN_CLIENT_INIT, s, { serverDomain: 0, port: 999999, timeoutMs: 0, flags: 0 }));
    expectErr(await c.reply(), Command.VCHAN_CLIENT_INIT, s, Errno.ENOENT);
    s = next();
    c.send(encodeRequest(Command.VCHAN_SERVER_INIT, s, { peerDomain: 4242, port: 1, readMin: 0, writeMin: 0 }));
    expectErr(await c.reply(), Command.VCHAN_SERVER_INIT, s, Errno.ESRCH);

    // After all that, the same connection still works.
    s = next();
    c.send(encodeRequest(Command.GET_VERSION, s, {}));
    const ok = await c.reply();
    assert.equal(ok.seq, s);
    assert.equal(ok.err, 0);
  } finally {
    c.close();
  }
  alive();
  assert.ok(written > 0);
});

test('a waiting VCHAN_CLIENT_INIT does not hold back later replies; a client that takes the fds and vanishes frees the server', async () => {
  const raw = new RawClient(d.runtimeDir);
  let server: Vchan | undefined;
  try {
    raw.send(encodeRequest(Command.VCHAN_CLIENT_INIT, 1, { serverDomain: 0, port: 555, timeoutMs: 0xffffffff, flags: 0 }));
    raw.send(encodeRequest(Command.GET_VERSION, 2, {}));
    const first = await raw.reply();
    assert.equal(first.seq, 2, 'the reply to GET_VERSION must not wait behind the waiting CLIENT_INIT');
    assert.equal(first.err, 0);
    server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 555 });
    const init = await raw.reply();
    assert.equal(init.seq, 1);
    assert.equal(init.id, Command.VCHAN_CLIENT_INIT);
    assert.equal(init.err, 0);
    assert.equal(init.fds.length, 3, 'VchanInfo comes with [shm, wait, kick]');
    for (const fd of init.fds) native.close(fd);
    // The "client" never attaches in shared memory and goes away: the daemon closes its side.
    raw.close();
    const eof = await within(server.read(), 5000, 'the server to see its vanished client as closed');
    assert.equal(eof, null);
    assert.equal(server.state, 'closed');
  } finally {
    raw.close();
    server?.close();
  }
});

test('a wrong seq, an event id as a request, and framing errors close that connection only', async () => {
  const cases: { name: string; frames: Buffer[]; answered: number }[] = [
    { name: 'seq skips one', frames: [encodeRequest(Command.GET_VERSION, 5, {}), encodeRequest(Command.GET_VERSION, 7, {})], answered: 1 },
    { name: 'seq repeats', frames: [encodeRequest(Command.GET_VERSION, 5, {}), encodeRequest(Command.GET_VERSION, 5, {})], answered: 1 },
    { name: 'seq goes back', frames: [encodeRequest(Command.GET_VERSION, 9, {}), encodeRequest(Command.GET_VERSION, 8, {})], answered: 1 },
    { name: 'event id as a request', frames: [rawFrame(0x8001, 0, Buffer.alloc(8))], answered: 0 },
    { name: 'datagram shorter than a header', frames: [Buffer.from([1, 0, 0])], answered: 0 },
    { name: 'empty datagram', frames: [Buffer.alloc(0)], answered: 0 },
    { name: 'size field larger than the datagram', frames: [rawFrame(Command.GET_VERSION, 1, Buffer.alloc(0), 8)], answered: 0 },
    { name: 'size field smaller than the datagram', frames: [rawFrame(Command.VCHAN_CLOSE, 1, Buffer.alloc(8), 4)], answered: 0 },
    {
      name: 'size field above MAX_PAYLOAD',
      frames: [rawFrame(Command.GET_VERSION, 1, Buffer.alloc(MAX_PAYLOAD + 1))],
      answered: 0,
    },
    { name: 'oversize datagram (64000 bytes)', frames: [rawFrame(Command.LIST_VCHANS, 1, Buffer.alloc(64000 - 8), 0xffff)], answered: 0 },
    {
      name: 'garbage after a good request',
      frames: [encodeRequest(Command.GET_VERSION, 1, {}), Buffer.from('GET / HTTP/1.1\r\nHost: kvmchand\r\n\r\n')],
      answered: 1,
    },
  ];
  for (const c of cases) {
    const raw = new RawClient(d.runtimeDir);
    try {
      for (const f of c.frames) raw.send(f);
      const replies = await raw.closedByDaemon(3000).catch((err: unknown) => {
        throw new Error(`${c.name}: the daemon did not close the connection (${(err as Error).message})`, { cause: err });
      });
      assert.equal(replies.length, c.answered, `${c.name}: replies before the close`);
      for (const r of replies) assert.equal(r.err, 0, `${c.name}: the good request was answered`);
    } finally {
      raw.close();
    }
  }
  alive();
  await serving();
  await expectFdsBackTo(d.daemon.pid, baselineFds, 5000, 'the daemon to release the closed connections');
  assert.match(d.log(), /protocol violation/, 'the daemon logs what it closed and why');
});

test('frames carrying fds: the connection is closed and no received fd is leaked', async () => {
  // What we pass: a few eventfds, each sent many times over (a leak would show as dozens of fds).
  const mine = [native.eventfd(0, 0), native.eventfd(0, 0), native.eventfd(0, 0)];
  const fdsOf = (n: number): number[] => Array.from({ length: n }, (_, i) => mine[i % mine.length]!);
  try {
    const cases: { name: string; frame: Buffer; fds: number }[] = [
      { name: 'GET_VERSION with 1 fd', frame: encodeRequest(Command.GET_VERSION, 1, {}), fds: 1 },
      { name: 'GET_VERSION with MAX_FDS (8) fds', frame: encodeRequest(Command.GET_VERSION, 1, {}), fds: 8 },
      {
        name: 'VCHAN_SERVER_INIT with 3 fds',
        frame: encodeRequest(Command.VCHAN_SERVER_INIT, 1, { peerDomain: 0, port: 77, readMin: 0, writeMin: 0 }),
        fds: 3,
      },
      { name: 'unknown id with 8 fds', frame: rawFrame(0x7777, 1, Buffer.alloc(4)), fds: 8 },
      { name: 'short datagram with 8 fds', frame: Buffer.from([1, 2]), fds: 8 },
      { name: '200 fds (beyond MAX_FDS: control data truncated)', frame: encodeRequest(Command.GET_VERSION, 1, {}), fds: 200 },
      { name: '253 fds (SCM_MAX_FD) on an oversize datagram', frame: rawFrame(1, 1, Buffer.alloc(30000)), fds: 253 },
    ];
    for (const c of cases) {
      const raw = new RawClient(d.runtimeDir);
      try {
        assert.ok(raw.send(c.frame, fdsOf(c.fds)), `${c.name}: send failed`);
        const replies = await raw.closedByDaemon(3000);
        assert.equal(replies.length, 0, `${c.name}: a frame with fds must not be answered`);
      } finally {
        raw.close();
      }
    }
    // A flood: many connections at once, each sending fd-laden frames as fast as it can.
    const flood = Array.from({ length: 40 }, () => new RawClient(d.runtimeDir));
    try {
      for (let round = 0; round < 5; round++) {
        for (const raw of flood) raw.send(encodeRequest(Command.GET_VERSION, round, {}), fdsOf(8));
      }
      for (const raw of flood) await raw.closedByDaemon(5000);
    } finally {
      for (const raw of flood) raw.close();
    }
  } finally {
    for (const fd of mine) native.close(fd);
  }
  alive();
  await serving();
  await expectFdsBackTo(d.daemon.pid, baselineFds, 5000, 'the daemon to hold exactly its fds from before the fd floods');
});

test('random frames: every reply is well formed, the daemon survives, nothing leaks', async (t) => {
  const rng = new Prng(SEED);
  const ids = [0x0001, 0x0002, 0x0010, 0x0011, 0x0012, 0x0020, 0x0021, 0x0030, 0x8001, 0x7777];
  let replies = 0;
  let closes = 0;
  for (let conn = 0; conn < 150; conn++) {
    const raw = new RawClient(d.runtimeDir);
    const sent = new Map<number, number>(); // seq -> id of the well-framed requests we sent
    try {
      // All frames are drawn before any is sent, so the seed alone decides them.
      let seq = rng.next();
      const frames: Buffer[] = [];
      const count = rng.int(1, 6);
      for (let i = 0; i < count; i++) {
        const kind = rng.int(0, 9);
        if (kind < 2) {
          frames.push(Buffer.from(rng.bytes(rng.int(0, 40)))); // pure noise
          continue;
        }
        const id = kind < 8 ? rng.pick(ids) : rng.int(0, 0xffff);
        const payload = Buffer.from(rng.bytes(rng.pick([0, 4, 8, 8, 16, 16, rng.int(0, 64)])));
        // Mostly the right seq and size, sometimes not.
        const s = rng.int(0, 9) < 8 ? seq : rng.next();
        const size = rng.int(0, 9) < 8 ? payload.length : rng.int(0, 0xffff);
        frames.push(rawFrame(id, s, payload, size));
        if (s === seq) seq = (seq + 1) >>> 0;
        if (size === payload.length && (id & 0x8000) === 0) sent.set(s, id);
      }
      for (const frame of frames) if (!raw.send(frame)) break;
      // Collect what comes back until the daemon closes or goes quiet.
      for (;;) {
        const ev = await raw.next(300).catch(() => null);
        if (ev === null) break;
        if (ev.kind === 'closed') {
          closes++;
          break;
        }
        replies++;
        const r = ev.reply;
        for (const fd of r.fds) native.close(fd); // a fuzzed SERVER_INIT may really succeed
        assert.equal(r.data.length, 8 + r.size, 'reply size field matches its datagram');
        assert.ok(sent.has(r.seq), `reply with seq ${r.seq} answers nothing we sent`);
        assert.equal(r.id, sent.get(r.seq), 'reply repeats the request id');
        assert.ok(r.err <= 0, 'err is 0 or a negative errno');
        if (r.err < 0) assert.equal(r.size, 8);
      }
    } finally {
      raw.close();
    }
  }
  t.diagnostic(`150 fuzzed connections (seed ${SEED}): ${replies} replies, ${closes} closed by the daemon`);
  assert.ok(replies > 0 && closes > 0, 'the fuzzer should provoke both answers and closes');
  alive();
  await serving();
  await expectFdsBackTo(d.daemon.pid, baselineFds, 5000, 'the daemon to release every fuzzed connection and vchan');
});

test('a client that connects and never speaks is dropped after the handshake timeout; one that spoke is not', async (t) => {
  const talker = new RawClient(d.runtimeDir);
  const silent = Array.from({ length: 50 }, () => new RawClient(d.runtimeDir));
  const t0 = Date.now();
  try {
    talker.send(encodeRequest(Command.GET_VERSION, 1, {}));
    assert.equal((await talker.reply()).err, 0);
    await within(
      Promise.all(silent.map((s) => s.closedByDaemon(HANDSHAKE_MS + 3000))),
      HANDSHAKE_MS + 4000,
      'silent clients to be dropped',
    );
    const took = Date.now() - t0;
    t.diagnostic(`50 silent clients dropped ${took} ms after connecting (handshake timeout ${HANDSHAKE_MS} ms)`);
    assert.ok(took >= HANDSHAKE_MS - 50, `dropped after ${took} ms, before the ${HANDSHAKE_MS} ms timeout`);
    // The client that spoke stays connected well past the timeout.
    await sleep(HANDSHAKE_MS);
    talker.send(encodeRequest(Command.GET_VERSION, 2, {}));
    const r = await talker.reply();
    assert.equal(r.seq, 2);
    assert.equal(r.err, 0);
  } finally {
    talker.close();
    for (const s of silent) s.close();
  }
  assert.match(d.log(), /handshake timeout/);
  alive();
  await expectFdsBackTo(d.daemon.pid, baselineFds, 5000, 'the daemon to release the dropped connections');
});

test('after all the abuse: the background vchan kept transferring, intact, and new vchans work', async (t) => {
  const before = written;
  await waitFor(() => written > before + 2 ** 20, 10000, 'the background transfer to keep going');
  await source.ok({ op: 'stop' });
  const sent = await within(sourceResult, 10000, 'the source to stop');
  const got = await within(sinkResult, 10000, 'the sink to see end of stream');
  t.diagnostic(`background vchan moved ${(Number(got['received']) / 2 ** 20).toFixed(0)} MiB during the abuse`);
  assert.ok(sent['ok'] === true && got['ok'] === true, `background peers failed: ${JSON.stringify([sent, got])}`);
  assert.equal(sent['error'], null, 'the background writer failed');
  assert.equal(got['error'], null, 'the background reader failed');
  assert.equal(got['mismatchAt'], -1, 'background stream corrupted');
  assert.equal(got['received'], sent['written'], 'the sink received a different byte count than the source wrote');
  assert.equal(got['sha256'], sent['sha256']);
  alive();
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 2 });
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 2, timeout: 2000 });
  await client.write(Buffer.from('fine'));
  assert.equal((await server.recv(4))?.toString(), 'fine');
  client.close();
  server.close();
});
