/**
 * Fuzzing (docs/wire-protocol.md, docs/testing.md): seeded, so a failure reproduces.
 * - Round trip: decode(encode(x)) == x for random valid messages of every kind, on both
 *   transports.
 * - Robustness: ≥ 200,000 random and mutated frames (bit flips, truncation, extension, random
 *   size field, random bytes, fds and recvmsg flags). Each is decoded or rejected with a
 *   WireError (a ProtocolError with a KVMCHAN_E_ code) — never another exception — and anything
 *   accepted re-encodes to exactly the same bytes (the encoding is canonical).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProtocolError } from '../../src/errors.js';
import {
  type AnyEvent,
  type AnyReply,
  type AnyRequest,
  AllowMask,
  ClientSequencer,
  COMMANDS,
  decodeDatagram,
  decodeEvent,
  decodeInbound,
  decodeReply,
  decodeRequest,
  type DecodeResult,
  encodeEvent,
  encodeReply,
  encodeRequest,
  EVENTS,
  type Frame,
  FrameDecoder,
  MAX_DOMAIN_ENTRIES,
  MAX_VCHAN_ENTRIES,
  RequestSequence,
  TRANSPORT_OF,
  type Transport,
  WireError,
} from '../../src/protocol/index.js';
import { fixtureFds, fixtures } from './fixtures.js';
import { randomStruct } from './generate.js';
import { Prng } from '../helpers/prng.js';

const SEED = Number(process.env.KVMCHAN_FUZZ_SEED ?? 0x5eed1234);
const MUTATIONS = Number(process.env.KVMCHAN_FUZZ_FRAMES ?? 200_000);

const commandSpecs = Object.values(COMMANDS);
const eventSpecs = Object.values(EVENTS);

interface Sample {
  readonly bytes: Buffer;
  readonly fds: readonly number[];
  readonly value: AnyRequest | AnyReply | AnyEvent;
}

function randomSample(rng: Prng): Sample {
  const kind = rng.below(10);
  if (kind < 4) {
    const spec = rng.pick(commandSpecs);
    const seq = rng.next();
    const body = randomStruct(rng, spec.request, 0);
    const bytes = encodeRequest(spec.id, seq, body as never);
    return { bytes, fds: [], value: { kind: 'request', id: spec.id, seq, body, fds: [] } as AnyRequest };
  }
  if (kind < 8) {
    const spec = rng.pick(commandSpecs);
    const seq = rng.next();
    const max = spec.id === 0x0020 ? MAX_DOMAIN_ENTRIES : MAX_VCHAN_ENTRIES;
    const body = randomStruct(rng, spec.reply, max);
    const fds = Array.from({ length: spec.replyFds }, (_, i) => 100 + i);
    const bytes = encodeReply(spec.id, seq, 0, body as never);
    return { bytes, fds, value: { kind: 'reply', ok: true, id: spec.id, seq, err: 0, body, fds } as AnyReply };
  }
  if (kind < 9) {
    const id = rng.chance(0.5) ? rng.pick(commandSpecs).id : rng.below(0x8000);
    const seq = rng.next();
    const err = -rng.int(1, 0x7fffffff);
    return { bytes: encodeReply(id, seq, err), fds: [], value: { kind: 'reply', ok: false, id, seq, err, body: undefined, fds: [] } };
  }
  const spec = rng.pick(eventSpecs);
  const body = randomStruct(rng, spec.body, 0);
  return { bytes: encodeEvent(spec.id, body as never), fds: [], value: { kind: 'event', id: spec.id, seq: 0, body } as AnyEvent };
}

function decodeAs(value: Sample['value'], frame: Frame): DecodeResult<unknown> {
  return value.kind === 'request' ? decodeRequest(frame) : value.kind === 'reply' ? decodeReply(frame) : decodeEvent(frame);
}

/** Re-encodes an accepted message: must give back the exact frame (canonical encoding). */
function reencode(v: AnyRequest | AnyReply | AnyEvent): Buffer {
  switch (v.kind) {
    case 'request':
      return encodeRequest(v.id, v.seq, v.body as never);
    case 'reply':
      return v.ok ? encodeReply(v.id, v.seq, 0, v.body as never) : encodeReply(v.id, v.seq, v.err);
    case 'event':
      return encodeEvent(v.id, v.body);
  }
}

function mutate(rng: Prng, src: Buffer): Buffer {
  const b = Buffer.from(src);
  switch (rng.below(8)) {
    case 0: {
      // bit flips
      const flips = rng.int(1, 4);
      for (let i = 0; i < flips && b.length > 0; i++) b[rng.below(b.length)]! ^= 1 << rng.below(8);
      return b;
    }
    case 1:
      return b.subarray(0, rng.below(b.length + 1)); // truncation
    case 2:
      return Buffer.concat([b, rng.chance(0.5) ? Buffer.alloc(rng.int(1, 16)) : rng.bytes(rng.int(1, 64))]); // extension
    case 3:
      if (b.length >= 4) b.writeUInt16LE(rng.chance(0.5) ? rng.below(0x10000) : Math.max(0, b.length - 8 + rng.int(-3, 3)), 2);
      return b; // random size field
    case 4: {
      // one payload byte replaced, size kept: hits padding, enums, strings, counts
      if (b.length > 8) b[8 + rng.below(b.length - 8)] = rng.pick([0, 1, 0x80, 0xff, rng.next() & 0xff]);
      return b;
    }
    case 5: {
      // random frame with a plausible header
      const payload = rng.bytes(rng.chance(0.5) ? rng.below(64) : rng.below(300));
      const h = Buffer.alloc(8);
      const ids = [...commandSpecs.map((s) => s.id), ...eventSpecs.map((s) => s.id), rng.below(0x10000)];
      h.writeUInt16LE(rng.pick(ids), 0);
      h.writeUInt16LE(payload.length, 2);
      h.writeUInt32LE(rng.chance(0.5) ? 0 : rng.next(), 4);
      return Buffer.concat([h, payload]);
    }
    case 6:
      return rng.bytes(rng.below(40)); // noise
    default: {
      // id swapped to another message, size kept
      if (b.length >= 2)
        b.writeUInt16LE(rng.pick([...commandSpecs.map((s) => s.id), ...eventSpecs.map((s) => s.id), rng.below(0x10000)]), 0);
      return b;
    }
  }
}

function assertWireError(e: unknown, where: string): void {
  if (!(e instanceof WireError) || !(e instanceof ProtocolError)) {
    throw new assert.AssertionError({ message: `${where}: threw a non-protocol error: ${String(e)}`, actual: e });
  }
  assert.match(e.code, /^KVMCHAN_E_[A-Z_]+$/);
  assert.equal(typeof e.fatal, 'boolean');
}

function checkResult<T>(r: DecodeResult<T>, where: string): r is { readonly ok: true; readonly value: T } {
  if (r.ok) return true;
  assertWireError(r.error, where);
  return false;
}

describe('fuzz', () => {
  test('round trip: decode(encode(x)) == x for random valid messages (seqpacket)', () => {
    const rng = new Prng(SEED);
    for (let i = 0; i < 20_000; i++) {
      const s = randomSample(rng);
      const frame = decodeDatagram(s.bytes, { fds: s.fds });
      const r = decodeAs(s.value, frame);
      if (!r.ok) throw r.error;
      assert.deepEqual(r.value, s.value);
    }
  });

  test('round trip through the stream decoder with random chunking, checking seqs', () => {
    const rng = new Prng(SEED ^ 0xabcdef);
    for (let round = 0; round < 200; round++) {
      const first = rng.next();
      const n = rng.int(1, 40);
      const samples: Sample[] = [];
      // The guest control channel: stream transport, guest-control mask (§8).
      const transport: Transport = TRANSPORT_OF['guest-control'];
      const mask = AllowMask.forKind('guest-control');
      for (let i = 0; i < n; i++) {
        const spec = rng.pick(commandSpecs.filter((c) => c.transports.includes(transport) && mask.allows(c.id)));
        const seq = (first + i) >>> 0;
        const body = randomStruct(rng, spec.request, 0);
        samples.push({
          bytes: encodeRequest(spec.id, seq, body as never),
          fds: [],
          value: { kind: 'request', id: spec.id, seq, body, fds: [] } as AnyRequest,
        });
      }
      const all = Buffer.concat(samples.map((s) => s.bytes));
      const d = new FrameDecoder();
      const frames: Frame[] = [];
      for (let at = 0; at < all.length;) {
        const k = rng.int(1, 64);
        frames.push(...d.push(all.subarray(at, at + k)));
        at += k;
      }
      d.end();
      const sequence = new RequestSequence();
      assert.equal(frames.length, n);
      frames.forEach((f, i) => {
        const r = decodeRequest(f, { transport, sequence, allowed: mask.predicate });
        if (!r.ok) throw r.error;
        assert.deepEqual(r.value, samples[i]!.value);
      });
    }
  });

  test(`${MUTATIONS} random and mutated frames: decoded or rejected with a WireError`, { timeout: 300_000 }, (t) => {
    const rng = new Prng(SEED ^ 0x1234567);
    const corpus: Sample[] = fixtures.map((f) => ({ bytes: f.bytes, fds: fixtureFds(f), value: f.value }));
    for (let i = 0; i < 200; i++) corpus.push(randomSample(rng));
    let accepted = 0;
    let rejected = 0;
    let stream = new FrameDecoder();
    let streamFrames = 0;
    let streamErrors = 0;
    let processed = 0;
    let rejectedDatagrams = 0;
    const kinds = ['local', 'guest-control'] as const;
    const masks = { local: AllowMask.forKind('local'), 'guest-control': AllowMask.forKind('guest-control') };

    for (let i = 0; i < MUTATIONS; i++) {
      const src = rng.pick(corpus);
      const bytes = rng.chance(0.05) ? src.bytes : mutate(rng, src.bytes);
      const fds = rng.chance(0.85) ? src.fds : Array.from({ length: rng.below(11) }, (_, k) => 200 + k);
      const info = { fds, truncated: rng.chance(0.002), controlTruncated: rng.chance(0.002) };

      // Stream: the same bytes pushed into one long-lived decoder, in two pieces; garbage
      // desynchronises it until a header is oversize, then it is replaced as a connection would be.
      if (rng.chance(0.1)) {
        const cut = rng.below(bytes.length + 1);
        try {
          streamFrames += stream.push(bytes.subarray(0, cut)).length + stream.push(bytes.subarray(cut)).length;
        } catch (e) {
          assertWireError(e, `FrameDecoder #${i}`);
          streamErrors++;
          stream = new FrameDecoder(); // a real connection would be closed here
        }
      }

      let frame: Frame;
      try {
        frame = decodeDatagram(bytes, info);
      } catch (e) {
        assertWireError(e, `decodeDatagram #${i}`);
        rejected++;
        rejectedDatagrams++;
        continue;
      }
      // The decoders must return, never throw, whatever the frame.
      const kind = rng.pick(kinds);
      const transport: Transport = rng.chance(0.8) ? TRANSPORT_OF[kind] : rng.pick(['seqpacket', 'stream'] as const);
      const sequence = rng.chance(0.5) ? new RequestSequence(frame.seq) : new RequestSequence();
      const results: DecodeResult<AnyRequest | AnyReply | AnyEvent>[] = [
        decodeRequest(frame, rng.chance(0.8) ? { transport, sequence, allowed: masks[kind].predicate } : { transport, sequence }),
        decodeReply(frame, rng.chance(0.3) ? { expectedId: src.value.id } : {}),
        decodeEvent(frame),
        decodeInbound(frame),
      ];
      for (const [k, r] of results.entries()) {
        if (checkResult(r, `decoder ${k} #${i}`)) {
          accepted++;
          const again = reencode(r.value);
          assert.equal(again.toString('hex'), bytes.toString('hex'), `#${i}: accepted bytes are not canonical`);
        } else {
          rejected++;
        }
      }
      // The client side must also survive anything.
      const client = new ClientSequencer({ firstSeq: frame.seq });
      const pending = client.request(COMMANDS[0x0001].id, {});
      pending.reply.catch(() => undefined);
      try {
        client.receive(frame);
      } catch (e) {
        assertWireError(e, `ClientSequencer.receive #${i}`);
      }

      processed++;
    }
    assert.equal(processed + rejectedDatagrams, MUTATIONS);
    t.diagnostic(
      `seed 0x${SEED.toString(16)}: ${rejectedDatagrams} datagrams rejected by framing, ${processed} decoded 4 ways: ` +
        `${accepted} accepted, ${rejected - rejectedDatagrams} rejected; stream: ${streamFrames} frames, ${streamErrors} resets`,
    );
    assert.ok(accepted > 1000, `only ${accepted} mutated frames were accepted: mutations too destructive`);
    assert.ok(rejected > 1000, `only ${rejected} rejections: mutations too gentle`);
    assert.ok(streamFrames > 100 && streamErrors > 10, `stream: ${streamFrames} frames, ${streamErrors} errors`);
  });

  test('a fresh stream decoder per buffer: random garbage in random chunks ends in frames or a WireError', () => {
    const rng = new Prng(SEED ^ 0x77);
    for (let round = 0; round < 20_000; round++) {
      const src = rng.pick(fixtures).bytes;
      const bytes = Buffer.concat([mutate(rng, src), mutate(rng, src), mutate(rng, src)]);
      const d = new FrameDecoder();
      try {
        let frames = 0;
        for (let at = 0; at < bytes.length;) {
          const k = rng.int(1, 17);
          frames += d.push(bytes.subarray(at, at + k)).length;
          at += k;
        }
        d.end();
        assert.ok(frames <= bytes.length / 8);
      } catch (e) {
        assertWireError(e, `stream round ${round}`);
      }
    }
  });
});
