/**
 * Stream transport (docs/wire-protocol.md §3.2): the incremental decoder yields the same frames
 * however the bytes are chunked — every single split point, every pair of split points of a
 * prefix, 1-byte chunks and random chunkings — and rejects an oversize header on its 8th byte.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeFrame, type Frame, FrameDecoder, FramingError, WireErrorCode } from '../../src/protocol/index.js';
import { fixtures } from './fixtures.js';
import { Prng } from '../helpers/prng.js';

// Frames with empty, small and larger payloads, ids from both directions.
const parts: Buffer[] = [
  ...fixtures.map((f) => f.bytes),
  encodeFrame(0x0001, 7, Buffer.alloc(0)),
  encodeFrame(0x7777, 0xffffffff, Buffer.from('abcdefghijklmnopqrstuvwxyz')),
  encodeFrame(0x0020, 9, Buffer.alloc(1000, 0x5a)),
  encodeFrame(0x8001, 0, Buffer.alloc(0)),
];
const stream = Buffer.concat(parts);

function expected(): { id: number; seq: number; payload: string }[] {
  return parts.map((b) => ({ id: b.readUInt16LE(0), seq: b.readUInt32LE(4), payload: b.subarray(8).toString('hex') }));
}

function summary(frames: Frame[]): { id: number; seq: number; payload: string }[] {
  return frames.map((f) => {
    assert.deepEqual(f.fds, []);
    return { id: f.id, seq: f.seq, payload: f.payload.toString('hex') };
  });
}

function feed(chunks: Buffer[]): Frame[] {
  const d = new FrameDecoder();
  const out: Frame[] = [];
  for (const c of chunks) out.push(...d.push(c));
  d.end();
  assert.equal(d.buffered, 0);
  return out;
}

describe('FrameDecoder', () => {
  const want = expected();

  test('one chunk', () => {
    assert.deepEqual(summary(feed([stream])), want);
  });

  test(`every split point (${stream.length + 1} of them)`, () => {
    for (let i = 0; i <= stream.length; i++) {
      const got = summary(feed([stream.subarray(0, i), stream.subarray(i)]));
      assert.deepEqual(got, want, `split at ${i}`);
    }
  });

  test('every pair of split points in the first 300 bytes', () => {
    const prefixLen = 300;
    const prefix = stream.subarray(0, prefixLen);
    const d0 = new FrameDecoder();
    const wantPrefix = summary(d0.push(prefix));
    const pending = d0.buffered;
    for (let i = 0; i <= prefixLen; i++) {
      for (let j = i; j <= prefixLen; j++) {
        const d = new FrameDecoder();
        const got = [...d.push(prefix.subarray(0, i)), ...d.push(prefix.subarray(i, j)), ...d.push(prefix.subarray(j))];
        assert.deepEqual(summary(got), wantPrefix, `splits at ${i}, ${j}`);
        assert.equal(d.buffered, pending);
      }
    }
  });

  test('1-byte chunks', () => {
    const chunks = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    assert.deepEqual(summary(feed(chunks)), want);
  });

  test('empty chunks anywhere change nothing', () => {
    const chunks = [Buffer.alloc(0), stream.subarray(0, 5), Buffer.alloc(0), stream.subarray(5), Buffer.alloc(0)];
    assert.deepEqual(summary(feed(chunks)), want);
  });

  test('random chunkings (seeded)', () => {
    const rng = new Prng(0xc0ffee);
    for (let round = 0; round < 2000; round++) {
      const chunks: Buffer[] = [];
      for (let at = 0; at < stream.length;) {
        const n = rng.chance(0.2) ? rng.int(0, 3) : rng.int(1, 300);
        chunks.push(stream.subarray(at, at + n));
        at += n;
      }
      assert.deepEqual(summary(feed(chunks)), want, `round ${round}`);
    }
  });

  test('accepts Uint8Array chunks that are not Buffers', () => {
    const u8 = new Uint8Array(stream.length + 4);
    u8.set(stream, 2);
    const view = new Uint8Array(u8.buffer, 2, stream.length);
    const d = new FrameDecoder();
    assert.deepEqual(summary(d.push(view)), want);
  });

  test('payload copies are not aliased to later chunks', () => {
    const d = new FrameDecoder();
    const a = Buffer.from(encodeFrame(1, 1, Buffer.from('hello')));
    const first = a.subarray(0, 10);
    const second = Buffer.from(a.subarray(10));
    assert.deepEqual(d.push(first), []);
    const [f] = d.push(second);
    second.fill(0);
    assert.equal(f!.payload.toString(), 'hello');
  });

  test('rejects an oversize header on its 8th byte, before any payload arrives', () => {
    const header = Buffer.from('01000140' + '01000000', 'hex'); // size 0x4001 = 16385
    const d = new FrameDecoder();
    for (let i = 0; i < 7; i++) assert.deepEqual(d.push(header.subarray(i, i + 1)), []);
    assert.throws(
      () => d.push(header.subarray(7, 8)),
      (e: unknown) => e instanceof FramingError && e.code === WireErrorCode.FRAME_OVERSIZE && e.fatal,
    );
  });

  test('an oversize header after valid frames in the same chunk throws', () => {
    const bad = Buffer.concat([parts[0]!, Buffer.from('0100ffff00000000', 'hex')]);
    const d = new FrameDecoder();
    assert.throws(() => d.push(bad), FramingError);
    assert.throws(() => d.push(parts[0]!), FramingError);
  });

  test('maxPayload option lowers the limit', () => {
    const d = new FrameDecoder({ maxPayload: 4 });
    assert.equal(d.push(encodeFrame(1, 1, Buffer.alloc(4))).length, 1);
    assert.throws(() => d.push(encodeFrame(1, 2, Buffer.alloc(5))), FramingError);
  });

  test('a 16384-byte payload split into 1-byte chunks is reassembled in linear time', () => {
    const big = encodeFrame(0x0020, 1, Buffer.alloc(16384, 7));
    const d = new FrameDecoder();
    const out: Frame[] = [];
    for (let i = 0; i < big.length; i++) out.push(...d.push(big.subarray(i, i + 1)));
    assert.equal(out.length, 1);
    assert.equal(out[0]!.payload.length, 16384);
    assert.ok(out[0]!.payload.every((b) => b === 7));
  });
});
