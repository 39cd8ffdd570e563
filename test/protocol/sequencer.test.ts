/**
 * Sequence numbers and reply matching (docs/wire-protocol.md §4.1, §4.4).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AbortError, DaemonError, DaemonUnavailableError } from '../../src/errors.js';
import {
  type AnyReply,
  ClientSequencer,
  Command,
  decodeDatagram,
  encodeEvent,
  Event,
  FrameDecoder,
  encodeFrame,
  encodeReply,
  FramingError,
  RequestSequence,
  ShutdownReason,
  VchanRole,
  WireErrorCode,
} from '../../src/protocol/index.js';
import { fixtures } from './fixtures.js';

function fixture(name: string): Buffer {
  const f = fixtures.find((x) => x.name === name);
  assert.ok(f, name);
  return f.bytes;
}

const info = {
  handle: 5,
  role: VchanRole.CLIENT,
  readOrder: 12,
  writeOrder: 12,
  localDomain: 2,
  peerDomain: 0,
  port: 9,
  shmOffset: 0,
  shmLength: 4096 + 8192,
};

describe('RequestSequence (responder)', () => {
  test('the first seq is free, then each must be previous + 1', () => {
    const s = new RequestSequence();
    assert.equal(s.expected, undefined);
    assert.ok(s.accept(0xdeadbeef));
    assert.equal(s.expected, 0xdeadbef0);
    assert.ok(!s.accept(0xdeadbeef));
    assert.ok(!s.accept(0xdeadbef1));
    assert.equal(s.expected, 0xdeadbef0, 'a rejected seq does not advance');
    assert.ok(s.accept(0xdeadbef0));
  });

  test('wraps from 0xFFFFFFFF to 0', () => {
    const s = new RequestSequence(0xffffffff);
    assert.ok(s.accept(0xffffffff));
    assert.equal(s.expected, 0);
    assert.ok(s.accept(0));
  });
});

describe('ClientSequencer (requester)', () => {
  test('allocates consecutive seqs from firstSeq, wrapping at 2^32', () => {
    const c = new ClientSequencer({ firstSeq: 0xfffffffe });
    const seqs = [0, 1, 2].map(() => {
      const r = c.request(Command.GET_VERSION, {});
      r.reply.catch(() => undefined);
      return r.seq;
    });
    assert.deepEqual(seqs, [0xfffffffe, 0xffffffff, 0]);
    assert.equal(c.pendingCount, 3);
    assert.equal(c.nextSeq, 1);
  });

  test('the encoded frame carries the seq', () => {
    const c = new ClientSequencer({ firstSeq: 0x01020304 });
    const r = c.request(Command.VCHAN_CLOSE, { handle: 42 });
    assert.equal(r.frame.toString('hex'), '1200080004030201' + '2a00000000000000');
  });

  test('an encode error consumes no seq', () => {
    const c = new ClientSequencer({ firstSeq: 10 });
    assert.throws(() => c.request(Command.VCHAN_CLOSE, { handle: -1 }));
    assert.equal(c.nextSeq, 10);
    assert.equal(c.pendingCount, 0);
  });

  test('replies out of order settle the right requests', async () => {
    const c = new ClientSequencer({ firstSeq: 1 });
    const wait = c.request(Command.VCHAN_CLIENT_INIT, { serverDomain: 0, port: 9, timeoutMs: 0xffffffff, flags: 0 });
    const version = c.request(Command.GET_VERSION, {});
    const close = c.request(Command.VCHAN_CLOSE, { handle: 3 });
    assert.equal(c.receive(decodeDatagram(encodeReply(Command.VCHAN_CLOSE, close.seq, -2))), undefined);
    c.receive(decodeDatagram(encodeReply(Command.GET_VERSION, version.seq, 0, { version: 1, maxPayload: 16384 })));
    c.receive(decodeDatagram(encodeReply(Command.VCHAN_CLIENT_INIT, wait.seq, 0, info), { fds: [30, 31, 32] }));
    const v = await version.reply;
    assert.deepEqual(v.body, { version: 1, maxPayload: 16384 });
    const w = await wait.reply;
    assert.deepEqual(w.body, info);
    assert.deepEqual(w.fds, [30, 31, 32]);
    await assert.rejects(close.reply, (e: unknown) => e instanceof DaemonError && e.code === 'KVMCHAN_E_DAEMON_ENOENT' && e.errno === -2);
    assert.equal(c.pendingCount, 0);
  });

  test('a reply for a seq already answered is unexpected', () => {
    const c = new ClientSequencer({ firstSeq: 1 });
    const r = c.request(Command.GET_VERSION, {});
    const reply = encodeReply(Command.GET_VERSION, r.seq, 0, { version: 1, maxPayload: 16384 });
    c.receive(decodeDatagram(reply));
    assert.throws(
      () => c.receive(decodeDatagram(reply)),
      (e: unknown) => e instanceof FramingError && e.code === 'KVMCHAN_E_UNEXPECTED_REPLY',
    );
  });

  test('events are returned, interleaved with replies; unknown events are ignored', () => {
    const c = new ClientSequencer();
    const r = c.request(Command.GET_VERSION, {});
    r.reply.catch(() => undefined);
    const ev = c.receive(decodeDatagram(encodeEvent(0x8001, { reason: ShutdownReason.STOP })));
    assert.deepEqual(ev, { kind: 'event', id: 0x8001, seq: 0, body: { reason: 0 } });
    assert.equal(c.receive(decodeDatagram(encodeFrame(0x8123, 0, Buffer.alloc(3)))), undefined);
    assert.equal(c.pendingCount, 1);
  });

  test('abandon rejects now; the late successful reply goes to onOrphanReply', async () => {
    const orphans: AnyReply[] = [];
    const c = new ClientSequencer({ onOrphanReply: (r) => orphans.push(r) });
    const r = c.request(Command.VCHAN_CLIENT_INIT, { serverDomain: 0, port: 9, timeoutMs: 0xffffffff, flags: 0 });
    c.abandon(r.seq, new AbortError());
    await assert.rejects(r.reply, AbortError);
    assert.equal(c.pendingCount, 1, 'still pending on the wire');
    c.receive(decodeDatagram(encodeReply(Command.VCHAN_CLIENT_INIT, r.seq, 0, info), { fds: [40, 41, 42] }));
    assert.equal(orphans.length, 1);
    assert.deepEqual(orphans[0]!.fds, [40, 41, 42]);
    assert.equal(c.pendingCount, 0);
  });

  test('an abandoned request answered with an error is dropped quietly', async () => {
    const orphans: AnyReply[] = [];
    const c = new ClientSequencer({ onOrphanReply: (r) => orphans.push(r) });
    const r = c.request(Command.VCHAN_CLIENT_INIT, { serverDomain: 0, port: 9, timeoutMs: 100, flags: 0 });
    c.abandon(r.seq, new AbortError());
    await assert.rejects(r.reply, AbortError);
    c.receive(decodeDatagram(encodeReply(Command.VCHAN_CLIENT_INIT, r.seq, -110)));
    assert.equal(orphans.length, 0);
    assert.equal(c.pendingCount, 0);
  });

  test('close rejects everything pending and refuses new requests', async () => {
    const c = new ClientSequencer();
    const a = c.request(Command.GET_VERSION, {});
    const b = c.request(Command.LIST_DOMAINS, { start: 0 });
    const gone = new DaemonUnavailableError('daemon went away');
    c.close(gone);
    await assert.rejects(a.reply, (e: unknown) => e === gone);
    await assert.rejects(b.reply, (e: unknown) => e === gone);
    assert.equal(c.pendingCount, 0);
    assert.throws(
      () => c.request(Command.GET_VERSION, {}),
      (e: unknown) => e === gone,
    );
  });
});

describe('ClientSequencer on the guest control channel (§6.8, §7.2)', () => {
  test('a guest session: HELLO, a pool announcement, a server grant, close — frames are the fixtures', async () => {
    const c = new ClientSequencer({ firstSeq: 1 });
    const hello = c.request(Command.GUEST_HELLO, { version: 1 });
    assert.deepEqual(hello.frame, fixture('GUEST_HELLO request'));
    const server = c.request(Command.GUEST_VCHAN_SERVER_INIT, { conn: 7, peerDomain: 0, port: 5000, readMin: 4096, writeMin: 65536 });
    assert.deepEqual(server.frame, fixture('GUEST_VCHAN_SERVER_INIT request'));
    const client = c.request(Command.GUEST_VCHAN_CLIENT_INIT, { conn: 8, serverDomain: 6, port: 0xabcd, timeoutMs: 0xffffffff, flags: 0 });
    assert.deepEqual(client.frame, fixture('GUEST_VCHAN_CLIENT_INIT request'));
    const close = c.request(Command.GUEST_VCHAN_CLOSE, { conn: 7, handle: 9 });
    assert.deepEqual(close.frame, fixture('GUEST_VCHAN_CLOSE request'));
    const closed = c.request(Command.GUEST_CONN_CLOSED, { conn: 8 });
    assert.deepEqual(closed.frame, fixture('GUEST_CONN_CLOSED request'));

    // The host's side of the stream, in 7-byte pieces: the HELLO reply, the pool announcement,
    // then the replies, the waiting CLIENT_INIT's last.
    const inbound = Buffer.concat([
      fixture('GUEST_HELLO reply'),
      fixture('EVENT_POOL_ADDED'),
      fixture('GUEST_VCHAN_SERVER_INIT reply'),
      fixture('GUEST_VCHAN_CLOSE reply'),
      fixture('GUEST_CONN_CLOSED reply'),
      fixture('GUEST_VCHAN_CLIENT_INIT reply'),
    ]);
    const d = new FrameDecoder();
    const events = [];
    for (let at = 0; at < inbound.length; at += 7) {
      for (const frame of d.push(inbound.subarray(at, at + 7))) {
        const ev = c.receive(frame);
        if (ev) events.push(ev);
      }
    }
    d.end();
    assert.deepEqual(events, [
      { kind: 'event', id: Event.POOL_ADDED, seq: 0, body: { pool: 2, peerId: 1, vectors: 64, size: 16 * 2 ** 20, socket: 'pool-2.sock' } },
    ]);
    assert.deepEqual((await hello.reply).body, { domain: 5, name: 'sys-net' });
    const grant = await server.reply;
    assert.equal(grant.body.pool, 2);
    assert.equal(grant.body.peerId, 0);
    assert.deepEqual(grant.fds, []);
    assert.deepEqual((await close.reply).body, {});
    assert.deepEqual((await closed.reply).body, {});
    const joined = await client.reply;
    assert.deepEqual([joined.body.role, joined.body.peerDomain, joined.body.vector, joined.body.peerVector], [VchanRole.CLIENT, 6, 17, 17]);
    assert.equal(c.pendingCount, 0);
  });

  test('a refused guest request rejects with the errno; a GuestVchanInfo reply with fds is fatal', async () => {
    const c = new ClientSequencer({ firstSeq: 1 });
    const early = c.request(Command.GUEST_VCHAN_SERVER_INIT, { conn: 7, peerDomain: 0, port: 5000, readMin: 0, writeMin: 0 });
    c.receive(decodeDatagram(fixture('GUEST_VCHAN_SERVER_INIT reply: -EPERM (sent before GUEST_HELLO)')));
    await assert.rejects(early.reply, (e: unknown) => e instanceof DaemonError && e.code === 'KVMCHAN_E_DAEMON_EPERM' && e.errno === -1);

    const c2 = new ClientSequencer({ firstSeq: 2 });
    const r = c2.request(Command.GUEST_VCHAN_SERVER_INIT, { conn: 7, peerDomain: 0, port: 5000, readMin: 4096, writeMin: 65536 });
    r.reply.catch(() => undefined);
    assert.throws(
      () => c2.receive(decodeDatagram(fixture('GUEST_VCHAN_SERVER_INIT reply'), { fds: [30, 31, 32] })),
      (e: unknown) => e instanceof FramingError && e.code === WireErrorCode.FDS_NOT_ALLOWED && e.fatal,
    );
  });

  test('a local VCHAN_CLIENT_INIT reply cannot answer a GUEST_VCHAN_CLIENT_INIT (ids differ)', () => {
    const c = new ClientSequencer({ firstSeq: 0x80000000 });
    const r = c.request(Command.GUEST_VCHAN_CLIENT_INIT, { conn: 1, serverDomain: 0, port: 0xabcd, timeoutMs: 0, flags: 0 });
    r.reply.catch(() => undefined);
    assert.throws(
      () => c.receive(decodeDatagram(fixture('VCHAN_CLIENT_INIT reply'), { fds: [1, 2, 3] })),
      (e: unknown) => e instanceof FramingError && e.code === WireErrorCode.REPLY_ID_MISMATCH,
    );
  });
});
