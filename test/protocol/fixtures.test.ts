/**
 * Byte fixtures (docs/wire-protocol.md §10): every message, both ways — the encoder produces
 * the hand-written bytes, and the decoder turns the bytes back into the object.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type AnyReply,
  Command,
  decodeDatagram,
  decodeEvent,
  decodeInbound,
  decodeReply,
  decodeRequest,
  encodeEvent,
  encodeReply,
  encodeRequest,
  Errno,
  FrameDecoder,
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
    assert.ok(fixtures.some((f) => f.direction === 'event'));
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
