/**
 * Byte fixtures (docs/wire-protocol.md §10): every message, both ways — the encoder produces
 * the hand-written bytes, and the decoder turns the bytes back into the object.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  type AnyReply,
  AllowMask,
  Command,
  commandSpec,
  decodeDatagram,
  decodeEvent,
  decodeInbound,
  decodeReply,
  decodeRequest,
  encodeEvent,
  encodeReply,
  encodeRequest,
  Errno,
  Event,
  FrameDecoder,
  RequestSequence,
  TRANSPORT_OF,
  type Transport,
  WireErrorCode,
} from '../../src/protocol/index.js';
import { type Fixture, fixtureFds, fixtures, UNKNOWN_REQUEST } from './fixtures.js';

function encodeFixture(f: Fixture): Buffer {
  switch (f.direction) {
    case 'request':
      return encodeRequest(f.value.id, f.value.seq, f.value.body as never);
    case 'reply':
      return encodeReplyValue(f.value);
    case 'event':
      return encodeEvent(f.value.id, f.value.body);
  }
}

function encodeReplyValue(v: AnyReply): Buffer {
  if (v.ok) return encodeReply(v.id, v.seq, 0, v.body as never);
  return encodeReply(v.id, v.seq, v.err);
}

function decodeFixture(f: Fixture, bytes: Buffer): unknown {
  const frame = decodeDatagram(bytes, { fds: fixtureFds(f) });
  const r = f.direction === 'request' ? decodeRequest(frame) : f.direction === 'reply' ? decodeReply(frame) : decodeEvent(frame);
  if (!r.ok) throw r.error;
  return r.value;
}

describe('fixtures', () => {
  test('cover every command request, success reply, and event', () => {
    for (const id of Object.values(Command)) {
      assert.ok(
        fixtures.some((f) => f.direction === 'request' && f.value.id === id),
        `no request fixture for 0x${id.toString(16)}`,
      );
      assert.ok(
        fixtures.some((f) => f.direction === 'reply' && f.value.id === id && f.value.ok),
        `no reply fixture for 0x${id.toString(16)}`,
      );
    }
    for (const id of Object.values(Event)) {
      assert.ok(
        fixtures.some((f) => f.direction === 'event' && f.value.id === id),
        `no event fixture for 0x${id.toString(16)}`,
      );
    }
  });

  test('every request fixture decodes on its transports and is -EPERM (WRONG_TRANSPORT) on the others', () => {
    const all: Transport[] = ['seqpacket', 'stream'];
    for (const f of fixtures) {
      if (f.direction !== 'request') continue;
      const spec = commandSpec(f.value.id)!;
      for (const transport of all) {
        const r = decodeRequest(decodeDatagram(f.bytes), { transport });
        if (spec.transports.includes(transport)) {
          assert.ok(r.ok, `${f.name} on ${transport}`);
        } else {
          assert.ok(!r.ok, `${f.name} accepted on ${transport}`);
          assert.equal(r.error.code, WireErrorCode.WRONG_TRANSPORT);
          assert.equal(r.error.replyErr, -Errno.EPERM);
        }
      }
    }
  });

  test('the guest-control fixtures, back to back on a stream, pass the guest-control checks', () => {
    const guestIds = new Set<number>([
      Command.GUEST_HELLO,
      Command.GUEST_VCHAN_SERVER_INIT,
      Command.GUEST_VCHAN_CLIENT_INIT,
      Command.GUEST_VCHAN_CLOSE,
      Command.GUEST_CONN_CLOSED,
    ]);
    const requests = fixtures.filter((f) => f.direction === 'request' && guestIds.has(f.value.id));
    assert.equal(requests.length, guestIds.size);
    // Their seqs run 1..5: one guest session, in the order the fixtures list them.
    const frames = new FrameDecoder().push(Buffer.concat(requests.map((f) => f.bytes)));
    const mask = AllowMask.forKind('guest-control');
    const options = { transport: TRANSPORT_OF['guest-control'], allowed: mask.predicate, sequence: new RequestSequence() };
    frames.forEach((frame, i) => {
      const r = decodeRequest(frame, options);
      assert.ok(r.ok, requests[i]!.name);
      assert.deepEqual(r.value, requests[i]!.value);
    });
    // The same bytes from a local client (seqpacket, local mask) are all refused -EPERM.
    const local = { transport: TRANSPORT_OF.local, allowed: AllowMask.forKind('local').predicate };
    for (const f of requests) {
      const r = decodeRequest(decodeDatagram(f.bytes), local);
      assert.ok(!r.ok);
      assert.equal(r.error.replyErr, -Errno.EPERM);
    }
  });

  for (const f of fixtures) {
    describe(f.name, () => {
      test('encodes to the fixture bytes', () => {
        assert.equal(encodeFixture(f).toString('hex'), f.bytes.toString('hex'));
      });

      test('decodes from the fixture bytes', () => {
        assert.deepEqual(decodeFixture(f, f.bytes), f.value);
      });

      test('decodes from a copy at an odd offset in a larger buffer', () => {
        const big = Buffer.alloc(f.bytes.length + 3, 0xee);
        f.bytes.copy(big, 1);
        assert.deepEqual(decodeFixture(f, big.subarray(1, 1 + f.bytes.length)), f.value);
      });

      if (f.direction !== 'request') {
        test('decodeInbound routes it by the event bit', () => {
          const r = decodeInbound(decodeDatagram(f.bytes, { fds: fixtureFds(f) }));
          assert.ok(r.ok);
          assert.deepEqual(r.value, f.value);
        });
      }
    });
  }

  test('the unknown-id request of §10 is answered by the §10 -ENOSYS reply', () => {
    const frame = decodeDatagram(UNKNOWN_REQUEST);
    const r = decodeRequest(frame);
    assert.ok(!r.ok);
    assert.equal(r.error.replyErr, -Errno.ENOSYS);
    assert.equal(r.error.fatal, false);
    const reply = encodeReply(frame.id, frame.seq, r.error.replyErr);
    const expected = fixtures.find((f) => f.name.startsWith('reply to unknown id'))!;
    assert.equal(reply.toString('hex'), expected.bytes.toString('hex'));
  });

  test('all fixtures back to back decode through the stream decoder', () => {
    const stream = Buffer.concat(fixtures.map((f) => f.bytes));
    const frames = new FrameDecoder().push(stream);
    assert.equal(frames.length, fixtures.length);
    frames.forEach((frame, i) => {
      const f = fixtures[i]!;
      assert.equal(Buffer.concat([f.bytes.subarray(0, 8), frame.payload]).equals(f.bytes), true);
    });
  });
});

/**
 * §10 of the spec shows hex dumps; each must be, byte for byte, a run of fixtures (so the examples
 * cannot drift from what the codec is tested against). A dump line is hex pairs, then optionally
 * three or more spaces and a comment.
 */
describe('docs/wire-protocol.md §10 examples', () => {
  const specPath = new URL('../../../docs/wire-protocol.md', import.meta.url);
  const text = readFileSync(specPath, 'utf8');
  const start = text.indexOf('\n## 10. Examples');
  const end = text.indexOf('\n## 11.', start);
  const section = text.slice(start, end);
  const blocks = [...section.matchAll(/```\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const known = [...fixtures.map((f) => ({ name: f.name, bytes: f.bytes })), { name: 'unknown request', bytes: UNKNOWN_REQUEST }];

  test('the section has examples', () => {
    assert.ok(start > 0 && end > start);
    assert.ok(blocks.length >= 8, `${blocks.length} examples`);
  });

  blocks.forEach((block, i) => {
    test(`example ${i + 1} is a run of fixtures`, () => {
      const dump = block
        .split('\n')
        .map((line) => line.split(/ {3,}/)[0]!.trim())
        .filter((h) => h.length > 0);
      for (const h of dump) assert.match(h, /^[0-9a-f]{2}( {1,2}[0-9a-f]{2})*$/, `not a hex dump line: ${h}`);
      const bytes = Buffer.from(dump.join('').replace(/ /g, ''), 'hex');
      const names: string[] = [];
      for (let at = 0; at < bytes.length;) {
        const f = known.find((k) => bytes.subarray(at, at + k.bytes.length).equals(k.bytes));
        assert.ok(f, `example ${i + 1}: bytes at ${at} match no fixture: ${bytes.subarray(at).toString('hex')}`);
        names.push(f.name);
        at += f.bytes.length;
      }
      assert.ok(names.length > 0);
    });
  });
});
