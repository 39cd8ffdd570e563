/**
 * Every error path of docs/wire-protocol.md §5: each code is produced by some input, with the
 * right `fatal` flag and reply errno. The last test checks no code was left without a case.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DaemonError, KvmchanError, ProtocolError } from '../../src/errors.js';
import {
  AllowMask,
  ClientSequencer,
  Command,
  decodeDatagram,
  decodeEvent,
  decodeFrameHeader,
  decodeReply,
  decodeRequest,
  type DecodeResult,
  encodeErrorReply,
  encodeEvent,
  encodeFrame,
  encodeReply,
  encodeRequest,
  EncodeError,
  Errno,
  Event,
  type Frame,
  FrameDecoder,
  FramingError,
  MAX_DOMAIN_ENTRIES,
  NotPermittedError,
  PayloadError,
  RequestSequence,
  UnknownMessageError,
  WireError,
  WireErrorCode,
} from '../../src/protocol/index.js';
import { hex } from './hex.js';

const covered = new Set<string>();

function frameOf(bytes: Buffer, fds: readonly number[] = []): Frame {
  return decodeDatagram(bytes, { fds });
}

function expectThrow(fn: () => unknown, code: WireErrorCode, cls: new (...args: never[]) => WireError = WireError): WireError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof cls, `expected ${cls.name} ${code}, got ${String(caught)}`);
  assert.ok(caught instanceof ProtocolError);
  assert.ok(caught instanceof KvmchanError);
  assert.equal(caught.code, code);
  covered.add(code);
  return caught;
}

function expectFail<T>(r: DecodeResult<T>, code: WireErrorCode, fatal: boolean, replyErr = 0): WireError {
  assert.ok(!r.ok, `expected ${code}, decoded fine`);
  assert.ok(r.error instanceof ProtocolError);
  assert.equal(r.error.code, code, r.error.message);
  assert.equal(r.error.fatal, fatal, `fatal flag of ${code}`);
  assert.equal(r.error.replyErr, replyErr, `replyErr of ${code}`);
  covered.add(code);
  return r.error;
}

/** The GUEST_VCHAN_SERVER_INIT reply fixture (§6.8), patched. Payload offsets: see the comments. */
function guestInfoReply(patch: (b: Buffer) => void): Buffer {
  const b = hex`
    10 01 40 00 02 00 00 00  00 00 00 00 00 00 00 00
    09 00 00 00 00 0c 10 00                            # 16 handle, 20 role, 21-22 orders, 23 pad8
    05 00 00 00 00 00 00 00  88 13 00 00               # 24 local, 28 peer, 32 port
    02 00 00 00 03 00 00 00  00 00 00 00 03 00 00 00   # 36 pool, 40 vector, 44 peer_id, 48 peer_vector
    00 00 00 00                                        # 52 pad
    00 00 02 00 00 00 00 00  00 20 01 00 00 00 00 00   # 56 shm_offset, 64 shm_length`;
  patch(b);
  return b;
}

/** The EVENT_POOL_ADDED fixture (§7.2), patched: 8 pool, 12 peer_id, 16 vectors, 20 pad, 24 size, 32 socket. */
function poolAdded(patch: (b: Buffer) => void): Buffer {
  const b = Buffer.concat([
    hex`01 81 58 00 00 00 00 00  02 00 00 00 01 00 00 00  40 00 00 00 00 00 00 00  00 00 00 01 00 00 00 00`,
    Buffer.from('pool-2.sock'),
    Buffer.alloc(64 - 11),
  ]);
  patch(b);
  return b;
}

describe('framing errors close the connection (§5.1)', () => {
  test('FRAME_SHORT: datagram shorter than the header', () => {
    for (const len of [0, 1, 7]) {
      const e = expectThrow(() => decodeDatagram(Buffer.alloc(len)), WireErrorCode.FRAME_SHORT, FramingError);
      assert.equal(e.fatal, true);
    }
    expectThrow(() => decodeFrameHeader(hex`01 00 00 00 01 00 00`), WireErrorCode.FRAME_SHORT);
  });

  test('FRAME_SHORT: stream ends inside a frame', () => {
    const d = new FrameDecoder();
    assert.deepEqual(d.push(hex`01 00 04 00 01 00 00 00 aa bb`), []);
    const e = expectThrow(() => d.end(), WireErrorCode.FRAME_SHORT, FramingError);
    assert.equal(e.id, 1);
    assert.equal(e.seq, 1);
    const d2 = new FrameDecoder();
    d2.push(hex`01 00 00`);
    expectThrow(() => d2.end(), WireErrorCode.FRAME_SHORT);
    const d3 = new FrameDecoder();
    d3.push(hex`01 00 00 00 01 00 00 00`);
    d3.end(); // a complete frame then EOF is fine
  });

  test('FRAME_SIZE_MISMATCH: size field disagrees with the datagram', () => {
    expectThrow(() => decodeDatagram(hex`01 00 04 00 01 00 00 00 aa bb`), WireErrorCode.FRAME_SIZE_MISMATCH, FramingError);
    expectThrow(() => decodeDatagram(hex`01 00 00 00 01 00 00 00 aa`), WireErrorCode.FRAME_SIZE_MISMATCH);
    const e = expectThrow(() => decodeDatagram(hex`12 00 09 00 05 00 00 00 2a 00 00 00 00 00 00 00`), WireErrorCode.FRAME_SIZE_MISMATCH);
    assert.equal(e.id, 0x12);
    assert.equal(e.seq, 5);
  });

  test('FRAME_OVERSIZE: size above MAX_PAYLOAD, in a datagram and on a stream', () => {
    const big = Buffer.alloc(8 + 16385);
    big.writeUInt16LE(1, 0);
    big.writeUInt16LE(16385, 2);
    expectThrow(() => decodeDatagram(big), WireErrorCode.FRAME_OVERSIZE, FramingError);
    // 16384 is allowed by the framing (the payload then fails GET_VERSION's length check).
    const max = Buffer.alloc(8 + 16384);
    max.writeUInt16LE(1, 0);
    max.writeUInt16LE(16384, 2);
    assert.equal(decodeDatagram(max).payload.length, 16384);
    // Stream: rejected on the 8th header byte, no payload awaited.
    const d = new FrameDecoder();
    d.push(hex`01 00 ff ff 00 00 00`);
    expectThrow(() => d.push(hex`00`), WireErrorCode.FRAME_OVERSIZE);
    expectThrow(() => d.push(hex`00`), WireErrorCode.FRAME_OVERSIZE); // stays dead
    expectThrow(() => d.end(), WireErrorCode.FRAME_OVERSIZE);
  });

  test('FRAME_TRUNCATED and CONTROL_TRUNCATED from recvmsg flags', () => {
    const ok = hex`01 00 00 00 01 00 00 00`;
    expectThrow(() => decodeDatagram(ok, { truncated: true }), WireErrorCode.FRAME_TRUNCATED, FramingError);
    expectThrow(() => decodeDatagram(ok, { controlTruncated: true }), WireErrorCode.CONTROL_TRUNCATED, FramingError);
  });

  test('BAD_SEQ: a request seq that is not previous+1', () => {
    const seq = new RequestSequence();
    assert.ok(decodeRequest(frameOf(hex`01 00 00 00 05 00 00 00`), { sequence: seq }).ok);
    expectFail(decodeRequest(frameOf(hex`01 00 00 00 07 00 00 00`), { sequence: seq }), WireErrorCode.BAD_SEQ, true);
    expectFail(decodeRequest(frameOf(hex`01 00 00 00 05 00 00 00`), { sequence: seq }), WireErrorCode.BAD_SEQ, true);
  });

  test('BAD_SEQ: an event whose seq is not 0', () => {
    expectFail(decodeEvent(frameOf(hex`01 80 08 00 01 00 00 00 00 00 00 00 00 00 00 00`)), WireErrorCode.BAD_SEQ, true);
  });

  test('BAD_DIRECTION: an event id on the request direction, and the converse', () => {
    const ev = frameOf(hex`01 80 08 00 00 00 00 00 00 00 00 00 00 00 00 00`);
    expectFail(decodeRequest(ev), WireErrorCode.BAD_DIRECTION, true);
    expectFail(decodeRequest(frameOf(hex`ff ff 00 00 01 00 00 00`)), WireErrorCode.BAD_DIRECTION, true);
    expectFail(decodeReply(ev), WireErrorCode.BAD_DIRECTION, true);
    expectFail(decodeEvent(frameOf(hex`01 00 00 00 00 00 00 00`)), WireErrorCode.BAD_DIRECTION, true);
  });

  test('FDS_NOT_ALLOWED: fds on a request that allows none, or on an unknown id', () => {
    expectFail(decodeRequest(frameOf(hex`01 00 00 00 01 00 00 00`, [5])), WireErrorCode.FDS_NOT_ALLOWED, true);
    expectFail(decodeRequest(frameOf(hex`77 77 00 00 01 00 00 00`, [5, 6])), WireErrorCode.FDS_NOT_ALLOWED, true);
  });

  test('FDS_NOT_ALLOWED: more than MAX_FDS in one datagram', () => {
    expectThrow(
      () => decodeDatagram(hex`01 00 00 00 01 00 00 00`, { fds: [1, 2, 3, 4, 5, 6, 7, 8, 9] }),
      WireErrorCode.FDS_NOT_ALLOWED,
      FramingError,
    );
  });

  test('FDS_NOT_ALLOWED: replies and events with too many fds', () => {
    const info = encodeReply(Command.VCHAN_CLIENT_INIT, 1, 0, {
      handle: 1,
      role: 1,
      readOrder: 10,
      writeOrder: 10,
      localDomain: 1,
      peerDomain: 0,
      port: 1,
      shmOffset: 0,
      shmLength: 4096 + 2048,
    });
    expectFail(decodeReply(frameOf(info, [1, 2, 3, 4])), WireErrorCode.FDS_NOT_ALLOWED, true);
    expectFail(decodeReply(frameOf(hex`12 00 08 00 01 00 00 00 fe ff ff ff 00 00 00 00`, [3])), WireErrorCode.FDS_NOT_ALLOWED, true);
    expectFail(decodeReply(frameOf(hex`12 00 08 00 01 00 00 00 00 00 00 00 00 00 00 00`, [3])), WireErrorCode.FDS_NOT_ALLOWED, true);
    expectFail(decodeEvent(frameOf(hex`01 80 08 00 00 00 00 00 00 00 00 00 00 00 00 00`, [3])), WireErrorCode.FDS_NOT_ALLOWED, true);
  });

  test('FDS_NOT_ALLOWED: a GuestVchanInfo reply never carries fds, nor a guest request or POOL_ADDED', () => {
    expectFail(
      decodeReply(
        frameOf(
          guestInfoReply(() => undefined),
          [7, 8, 9],
        ),
      ),
      WireErrorCode.FDS_NOT_ALLOWED,
      true,
    );
    expectFail(
      decodeReply(
        frameOf(
          guestInfoReply(() => undefined),
          [7],
        ),
      ),
      WireErrorCode.FDS_NOT_ALLOWED,
      true,
    );
    expectFail(decodeRequest(frameOf(hex`01 01 08 00 01 00 00 00 01 00 00 00 00 00 00 00`, [3])), WireErrorCode.FDS_NOT_ALLOWED, true);
    expectFail(
      decodeEvent(
        frameOf(
          poolAdded(() => undefined),
          [3],
        ),
      ),
      WireErrorCode.FDS_NOT_ALLOWED,
      true,
    );
  });
});

describe('errors inside a well-framed request are answered (§5.2)', () => {
  test('UNKNOWN_ID: unknown and reserved ids get -ENOSYS; the connection stays up', () => {
    const seq = new RequestSequence();
    for (const [i, id] of [0x7777, 0x0000, 0x0035, 0x003f, 0x0100, 0x01ff, 0x7fff].entries()) {
      const f = frameOf(encodeFrame(id, 100 + i, Buffer.alloc(0)));
      const e = expectFail(decodeRequest(f, { sequence: seq }), WireErrorCode.UNKNOWN_ID, false, -Errno.ENOSYS);
      assert.ok(e instanceof UnknownMessageError);
      assert.equal(e.id, id);
      assert.equal(e.seq, 100 + i);
    }
    // The next request with the following seq is accepted.
    assert.ok(decodeRequest(frameOf(hex`01 00 00 00 6b 00 00 00`), { sequence: seq }).ok);
  });

  test('UNKNOWN_ID: ids of the guest-control block that are not defined, on the guest channel', () => {
    const options = { transport: 'stream' as const, allowed: AllowMask.forKind('guest-control').predicate };
    for (const id of [0x0100, 0x0102, 0x010f, 0x0118, 0x01ff]) {
      // -ENOSYS comes before the transport and mask checks, whatever the payload.
      const [f] = new FrameDecoder().push(encodeFrame(id, 1, hex`01 02 03`));
      expectFail(decodeRequest(f!, options), WireErrorCode.UNKNOWN_ID, false, -Errno.ENOSYS);
    }
  });

  test('WRONG_TRANSPORT: fd-carrying commands on the stream transport get -EPERM', () => {
    const req = encodeRequest(Command.VCHAN_SERVER_INIT, 1, { peerDomain: 0, port: 1, readMin: 0, writeMin: 0 });
    const [frame] = new FrameDecoder().push(req);
    const e = expectFail(decodeRequest(frame!, { transport: 'stream' }), WireErrorCode.WRONG_TRANSPORT, false, -Errno.EPERM);
    assert.ok(e instanceof NotPermittedError);
    assert.ok(decodeRequest(frame!, { transport: 'seqpacket' }).ok);
  });

  test('WRONG_TRANSPORT: GUEST_* commands on seqpacket get -EPERM, before the mask and the payload', () => {
    const requests = [
      hex`01 01 08 00 01 00 00 00  01 00 00 00 00 00 00 00`,
      hex`10 01 18 00 01 00 00 00  07 00 00 00 00 00 00 00 88 13 00 00 00 10 00 00 00 00 01 00 00 00 00 00`,
      hex`11 01 18 00 01 00 00 00  08 00 00 00 06 00 00 00 cd ab 00 00 ff ff ff ff 00 00 00 00 00 00 00 00`,
      hex`12 01 08 00 01 00 00 00  07 00 00 00 09 00 00 00`,
      hex`13 01 08 00 01 00 00 00  08 00 00 00 00 00 00 00`,
    ];
    const local = AllowMask.forKind('local');
    const stream = { transport: 'stream' as const, allowed: AllowMask.forKind('guest-control').predicate };
    for (const bytes of requests) {
      const frame = frameOf(bytes);
      const e = expectFail(
        decodeRequest(frame, { transport: 'seqpacket', allowed: local.predicate }),
        WireErrorCode.WRONG_TRANSPORT,
        false,
        -Errno.EPERM,
      );
      assert.ok(e instanceof NotPermittedError);
      assert.deepEqual(encodeErrorReply(frame, e), Buffer.concat([bytes.subarray(0, 2), hex`08 00 01 00 00 00 ff ff ff ff 00 00 00 00`]));
      // A malformed payload does not change the answer (§5.2: -EPERM before the payload).
      const bad = Buffer.concat([bytes, hex`00`]);
      bad.writeUInt16LE(bad.length - 8, 2);
      expectFail(decodeRequest(frameOf(bad), { transport: 'seqpacket' }), WireErrorCode.WRONG_TRANSPORT, false, -Errno.EPERM);
      expectFail(decodeRequest(frameOf(bad), stream), WireErrorCode.BAD_LENGTH, false, -Errno.EINVAL);
      // On the stream, with the guest-control mask, it decodes.
      assert.ok(decodeRequest(frameOf(bytes), stream).ok);
    }
  });

  test('NOT_ALLOWED: commands outside the allow mask get -EPERM, before the payload is looked at', () => {
    const guest = { transport: 'stream' as const, allowed: AllowMask.forKind('guest-control').predicate };
    // VCHAN_CLOSE is allowed on the stream but not in the guest-control mask. Bad padding too:
    // -EPERM wins (§5.2 order).
    const f = frameOf(hex`12 00 08 00 01 00 00 00 2a 00 00 00 01 00 00 00`);
    const e = expectFail(decodeRequest(f, guest), WireErrorCode.NOT_ALLOWED, false, -Errno.EPERM);
    assert.ok(e instanceof NotPermittedError);
    assert.ok(decodeRequest(frameOf(hex`01 00 00 00 01 00 00 00`), guest).ok);
    assert.ok(decodeRequest(frameOf(hex`20 00 08 00 01 00 00 00 00 00 00 00 00 00 00 00`), guest).ok);
    // A local mask narrowed by policy.
    const narrowed = AllowMask.forKind('local').deny(Command.VCHAN_SERVER_INIT);
    const server = frameOf(hex`10 00 10 00 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00`);
    expectFail(
      decodeRequest(server, { transport: 'seqpacket', allowed: narrowed.predicate }),
      WireErrorCode.NOT_ALLOWED,
      false,
      -Errno.EPERM,
    );
    assert.ok(decodeRequest(server, { transport: 'seqpacket', allowed: AllowMask.forKind('local').predicate }).ok);
  });

  test('BAD_LENGTH: payload too short or too long for the id', () => {
    expectFail(decodeRequest(frameOf(hex`01 00 04 00 01 00 00 00 00 00 00 00`)), WireErrorCode.BAD_LENGTH, false, -Errno.EINVAL);
    expectFail(decodeRequest(frameOf(hex`02 00 07 00 01 00 00 00 01 00 00 00 00 00 00`)), WireErrorCode.BAD_LENGTH, false, -Errno.EINVAL);
    expectFail(
      decodeRequest(frameOf(hex`11 00 14 00 01 00 00 00 00000000 01000000 00000000 00000000 00000000`)),
      WireErrorCode.BAD_LENGTH,
      false,
      -Errno.EINVAL,
    );
    // A guest sending the local 16-byte VCHAN_SERVER_INIT layout under the guest id.
    expectFail(
      decodeRequest(frameOf(hex`10 01 10 00 01 00 00 00 07 00 00 00 00 00 00 00 88 13 00 00 00 10 00 00`)),
      WireErrorCode.BAD_LENGTH,
      false,
      -Errno.EINVAL,
    );
    expectFail(decodeRequest(frameOf(hex`01 01 04 00 01 00 00 00 01 00 00 00`)), WireErrorCode.BAD_LENGTH, false, -Errno.EINVAL);
  });

  test('BAD_PADDING: non-zero pad16 / pad32 in a request', () => {
    expectFail(
      decodeRequest(frameOf(hex`02 00 08 00 01 00 00 00 01 00 01 00 00 00 00 00`)),
      WireErrorCode.BAD_PADDING,
      false,
      -Errno.EINVAL,
    );
    expectFail(
      decodeRequest(frameOf(hex`02 00 08 00 01 00 00 00 01 00 00 00 00 00 00 80`)),
      WireErrorCode.BAD_PADDING,
      false,
      -Errno.EINVAL,
    );
    expectFail(
      decodeRequest(frameOf(hex`12 00 08 00 01 00 00 00 2a 00 00 00 01 00 00 00`)),
      WireErrorCode.BAD_PADDING,
      false,
      -Errno.EINVAL,
    );
    // The trailing pad32 of the guest requests.
    expectFail(
      decodeRequest(frameOf(hex`01 01 08 00 01 00 00 00 01 00 00 00 00 00 00 01`)),
      WireErrorCode.BAD_PADDING,
      false,
      -Errno.EINVAL,
    );
    expectFail(
      decodeRequest(frameOf(hex`10 01 18 00 01 00 00 00 07 00 00 00 00 00 00 00 88 13 00 00 00 10 00 00 00 00 01 00 ff 00 00 00`)),
      WireErrorCode.BAD_PADDING,
      false,
      -Errno.EINVAL,
    );
    expectFail(
      decodeRequest(frameOf(hex`11 01 18 00 01 00 00 00 08 00 00 00 06 00 00 00 cd ab 00 00 00 00 00 00 00 00 00 00 00 00 00 80`)),
      WireErrorCode.BAD_PADDING,
      false,
      -Errno.EINVAL,
    );
    expectFail(
      decodeRequest(frameOf(hex`13 01 08 00 01 00 00 00 08 00 00 00 00 01 00 00`)),
      WireErrorCode.BAD_PADDING,
      false,
      -Errno.EINVAL,
    );
  });

  test('BAD_FLAGS: VCHAN_CLIENT_INIT.flags must be 0', () => {
    for (const flags of ['01000000', '00000080']) {
      const bytes = Buffer.from(`1100100001000000` + `00000000` + `01000000` + `00000000` + flags, 'hex');
      expectFail(decodeRequest(frameOf(bytes)), WireErrorCode.BAD_FLAGS, false, -Errno.EINVAL);
    }
  });

  test('BAD_FLAGS: GUEST_VCHAN_CLIENT_INIT.flags must be 0', () => {
    const stream = { transport: 'stream' as const, allowed: AllowMask.forKind('guest-control').predicate };
    for (const flags of ['01 00 00 00', '00 00 00 80']) {
      const bytes = Buffer.from(`1101180001000000 08000000 06000000 cdab0000 00000000 ${flags} 00000000`.replace(/ /g, ''), 'hex');
      expectFail(decodeRequest(frameOf(bytes), stream), WireErrorCode.BAD_FLAGS, false, -Errno.EINVAL);
    }
  });

  test('a -EINVAL error reply is encoded for the request and the connection goes on', () => {
    const seq = new RequestSequence();
    const f = frameOf(hex`12 00 08 00 09 00 00 00 2a 00 00 00 01 00 00 00`);
    const r = decodeRequest(f, { sequence: seq });
    assert.ok(!r.ok);
    assert.deepEqual(encodeErrorReply(f, r.error), hex`12 00 08 00 09 00 00 00 ea ff ff ff 00 00 00 00`);
    assert.ok(decodeRequest(frameOf(hex`12 00 08 00 0a 00 00 00 2a 00 00 00 00 00 00 00`), { sequence: seq }).ok);
  });

  test('no error reply for a fatal error', () => {
    const f = frameOf(hex`01 80 00 00 00 00 00 00`);
    const r = decodeRequest(f);
    assert.ok(!r.ok);
    assert.equal(encodeErrorReply(f, r.error), undefined);
  });
});

describe('errors on the reply direction are fatal (§5.3)', () => {
  const vchanInfoReply = (patch: (b: Buffer) => void): Buffer => {
    const b = hex`
      11 00 30 00 01 00 00 00  00 00 00 00 00 00 00 00
      01 00 00 00 01 0a 0a 00  01 00 00 00 00 00 00 00
      01 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00
      00 18 00 00 00 00 00 00`;
    patch(b);
    return b;
  };
  const fds = [7, 8, 9];

  test('the unpatched VchanInfo reply decodes', () => {
    assert.ok(
      decodeReply(
        frameOf(
          vchanInfoReply(() => undefined),
          fds,
        ),
      ).ok,
    );
  });

  test('BAD_ENUM: role, ring orders, list states, shutdown reason', () => {
    expectFail(
      decodeReply(
        frameOf(
          vchanInfoReply((b) => (b[20] = 2)),
          fds,
        ),
      ),
      WireErrorCode.BAD_ENUM,
      true,
    );
    expectFail(
      decodeReply(
        frameOf(
          vchanInfoReply((b) => (b[21] = 9)),
          fds,
        ),
      ),
      WireErrorCode.BAD_ENUM,
      true,
    );
    expectFail(
      decodeReply(
        frameOf(
          vchanInfoReply((b) => (b[22] = 29)),
          fds,
        ),
      ),
      WireErrorCode.BAD_ENUM,
      true,
    );
    const vchanList = hex`
      21 00 40 00 01 00 00 00  00 00 00 00 00 00 00 00
      01 00 00 00 00 00 00 00
      01 00 00 00 00 00 00 00  03 00 00 00 01 00 00 00
      02 01 0a 0a 00 00 00 00  00 00 00 00 00 00 00 00
      00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00`;
    expectFail(decodeReply(frameOf(vchanList)), WireErrorCode.BAD_ENUM, true); // server_state 2
    vchanList[40] = 1;
    assert.ok(decodeReply(frameOf(vchanList)).ok);
    vchanList[41] = 3;
    expectFail(decodeReply(frameOf(vchanList)), WireErrorCode.BAD_ENUM, true); // client_state 3
    expectFail(decodeEvent(frameOf(hex`01 80 08 00 00 00 00 00 03 00 00 00 00 00 00 00`)), WireErrorCode.BAD_ENUM, true);
  });

  test('BAD_PADDING: reply pad, VchanInfo pad8 and pad32, event pad', () => {
    expectFail(decodeReply(frameOf(hex`12 00 08 00 01 00 00 00 00 00 00 00 01 00 00 00`)), WireErrorCode.BAD_PADDING, true);
    expectFail(
      decodeReply(
        frameOf(
          vchanInfoReply((b) => (b[23] = 1)),
          fds,
        ),
      ),
      WireErrorCode.BAD_PADDING,
      true,
    );
    expectFail(
      decodeReply(
        frameOf(
          vchanInfoReply((b) => (b[36] = 1)),
          fds,
        ),
      ),
      WireErrorCode.BAD_PADDING,
      true,
    );
    expectFail(decodeEvent(frameOf(hex`01 80 08 00 00 00 00 00 00 00 00 00 00 01 00 00`)), WireErrorCode.BAD_PADDING, true);
  });

  test('the unpatched GuestVchanInfo reply and POOL_ADDED event decode', () => {
    assert.ok(decodeReply(frameOf(guestInfoReply(() => undefined))).ok);
    assert.ok(decodeEvent(frameOf(poolAdded(() => undefined))).ok);
  });

  test('BAD_ENUM, BAD_PADDING, BAD_RANGE in a GuestVchanInfo reply', () => {
    expectFail(decodeReply(frameOf(guestInfoReply((b) => (b[20] = 2)))), WireErrorCode.BAD_ENUM, true);
    expectFail(decodeReply(frameOf(guestInfoReply((b) => (b[21] = 9)))), WireErrorCode.BAD_ENUM, true);
    expectFail(decodeReply(frameOf(guestInfoReply((b) => (b[22] = 29)))), WireErrorCode.BAD_ENUM, true);
    expectFail(decodeReply(frameOf(guestInfoReply((b) => (b[23] = 1)))), WireErrorCode.BAD_PADDING, true);
    expectFail(decodeReply(frameOf(guestInfoReply((b) => (b[52] = 1)))), WireErrorCode.BAD_PADDING, true);
    expectFail(decodeReply(frameOf(guestInfoReply((b) => (b[62] = 0x20)))), WireErrorCode.BAD_RANGE, true); // shm_offset
    expectFail(decodeReply(frameOf(guestInfoReply((b) => (b[70] = 0x20)))), WireErrorCode.BAD_RANGE, true); // shm_length
    assert.ok(decodeReply(frameOf(guestInfoReply((b) => (b[70] = 0x1f)))).ok);
    // The 40-byte local VchanInfo under a guest id is the wrong length.
    const short = guestInfoReply(() => undefined).subarray(0, 8 + 8 + 40);
    short.writeUInt16LE(48, 2);
    expectFail(decodeReply(frameOf(short)), WireErrorCode.BAD_LENGTH, true);
  });

  test('EVENT_POOL_ADDED: bad padding, size above 2^53-1, socket without NUL or with bytes after it, wrong length', () => {
    expectFail(decodeEvent(frameOf(poolAdded((b) => (b[20] = 1)))), WireErrorCode.BAD_PADDING, true);
    expectFail(decodeEvent(frameOf(poolAdded((b) => (b[30] = 0x20)))), WireErrorCode.BAD_RANGE, true);
    expectFail(decodeEvent(frameOf(poolAdded((b) => b.fill(0x61, 32)))), WireErrorCode.BAD_STRING, true);
    expectFail(decodeEvent(frameOf(poolAdded((b) => (b[95] = 0x61)))), WireErrorCode.BAD_STRING, true);
    expectFail(decodeEvent(frameOf(poolAdded((b) => (b[32 + 4] = 0xff)))), WireErrorCode.BAD_STRING, true);
    const short = poolAdded(() => undefined).subarray(0, 8 + 87);
    short.writeUInt16LE(87, 2);
    expectFail(decodeEvent(frameOf(short)), WireErrorCode.BAD_LENGTH, true);
    // A name the guest must ignore ('/' or a leading '.') is still a valid string on the wire.
    for (const name of ['../control.sock', '.hidden', 'a/b']) {
      const r = decodeEvent(frameOf(poolAdded((b) => b.fill(0, 32).write(name, 32))));
      assert.ok(r.ok);
      assert.equal((r.value.body as { socket: string }).socket, name);
    }
  });

  test('BAD_STRING: GUEST_HELLO reply name without NUL', () => {
    const b = Buffer.concat([hex`01 01 30 00 01 00 00 00 00 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00`, Buffer.alloc(32, 0x61)]);
    expectFail(decodeReply(frameOf(b)), WireErrorCode.BAD_STRING, true);
    b[b.length - 1] = 0;
    assert.ok(decodeReply(frameOf(b)).ok);
  });

  test('BAD_RANGE: a u64 above 2^53-1', () => {
    expectFail(
      decodeReply(
        frameOf(
          vchanInfoReply((b) => (b[54] = 0x20)),
          fds,
        ),
      ),
      WireErrorCode.BAD_RANGE,
      true,
    );
    assert.ok(
      decodeReply(
        frameOf(
          vchanInfoReply((b) => (b[54] = 0x1f)),
          fds,
        ),
      ).ok,
    );
  });

  test('BAD_STRING: no NUL, bytes after the NUL, invalid UTF-8', () => {
    const entry = (name: string): Buffer =>
      Buffer.from(`2000400001000000` + `0000000000000000` + `0100000000000000` + `00000000000000000000000000000000` + name, 'hex');
    const nameOf = (text: string): string => Buffer.concat([Buffer.from(text, 'hex'), Buffer.alloc(32 - text.length / 2)]).toString('hex');
    assert.ok(decodeReply(frameOf(entry(nameOf('61')))).ok);
    expectFail(decodeReply(frameOf(entry('61'.repeat(32)))), WireErrorCode.BAD_STRING, true);
    expectFail(decodeReply(frameOf(entry(nameOf('610062')))), WireErrorCode.BAD_STRING, true);
    expectFail(decodeReply(frameOf(entry(nameOf('ff')))), WireErrorCode.BAD_STRING, true);
    expectFail(decodeReply(frameOf(entry(nameOf('c3')))), WireErrorCode.BAD_STRING, true);
  });

  test('BAD_LENGTH: short reply, error reply with data, list count not matching the payload', () => {
    expectFail(decodeReply(frameOf(hex`12 00 04 00 01 00 00 00 00 00 00 00`)), WireErrorCode.BAD_LENGTH, true);
    expectFail(decodeReply(frameOf(hex`12 00 0c 00 01 00 00 00 fe ff ff ff 00 00 00 00 01 00 00 00`)), WireErrorCode.BAD_LENGTH, true);
    expectFail(
      decodeReply(frameOf(hex`20 00 10 00 01 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00`)),
      WireErrorCode.BAD_LENGTH,
      true,
    );
    expectFail(
      decodeReply(frameOf(hex`20 00 10 00 01 00 00 00 00 00 00 00 00 00 00 00 ff ff ff ff 00 00 00 00`)),
      WireErrorCode.BAD_LENGTH,
      true,
    );
    expectFail(decodeReply(frameOf(hex`12 00 0c 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`)), WireErrorCode.BAD_LENGTH, true);
  });

  test('BAD_REPLY_ERR: a positive err', () => {
    expectFail(decodeReply(frameOf(hex`12 00 08 00 01 00 00 00 05 00 00 00 00 00 00 00`)), WireErrorCode.BAD_REPLY_ERR, true);
  });

  test('MISSING_FDS: a VchanInfo reply with fewer than 3 fds', () => {
    expectFail(
      decodeReply(
        frameOf(
          vchanInfoReply(() => undefined),
          [7, 8],
        ),
      ),
      WireErrorCode.MISSING_FDS,
      true,
    );
    expectFail(decodeReply(frameOf(vchanInfoReply(() => undefined))), WireErrorCode.MISSING_FDS, true);
  });

  test('UNKNOWN_ID: a success reply for an unknown id', () => {
    expectFail(decodeReply(frameOf(hex`77 77 08 00 01 00 00 00 00 00 00 00 00 00 00 00`)), WireErrorCode.UNKNOWN_ID, true);
  });

  test('UNKNOWN_EVENT: ignored, not fatal', () => {
    const e = expectFail(decodeEvent(frameOf(hex`ff 8f 04 00 00 00 00 00 01 02 03 04`)), WireErrorCode.UNKNOWN_EVENT, false);
    assert.ok(e instanceof UnknownMessageError);
  });

  test('REPLY_ID_MISMATCH: decodeReply with an expected id, and in the sequencer', () => {
    expectFail(
      decodeReply(frameOf(hex`12 00 08 00 01 00 00 00 00 00 00 00 00 00 00 00`), { expectedId: 1 }),
      WireErrorCode.REPLY_ID_MISMATCH,
      true,
    );
    const s = new ClientSequencer({ firstSeq: 1 });
    const { reply } = s.request(Command.GET_VERSION, {});
    reply.catch(() => undefined);
    expectThrow(
      () => s.receive(frameOf(hex`12 00 08 00 01 00 00 00 00 00 00 00 00 00 00 00`)),
      WireErrorCode.REPLY_ID_MISMATCH,
      FramingError,
    );
  });

  test('UNEXPECTED_REPLY: a reply whose seq matches no request', () => {
    const s = new ClientSequencer({ firstSeq: 1 });
    expectThrow(
      () => s.receive(frameOf(hex`01 00 10 00 01 00 00 00 00000000 00000000 01000000 00400000`)),
      WireErrorCode.UNEXPECTED_REPLY,
      FramingError,
    );
  });

  test('a bad reply thrown by the sequencer is a fatal PayloadError', () => {
    const s = new ClientSequencer({ firstSeq: 1 });
    const { reply } = s.request(Command.GET_VERSION, {});
    reply.catch(() => undefined);
    const e = expectThrow(
      () => s.receive(frameOf(hex`01 00 0c 00 01 00 00 00 00000000 00000000 01000000`)),
      WireErrorCode.BAD_LENGTH,
      PayloadError,
    );
    assert.equal(e.fatal, true);
  });

  test('a DaemonError carries the errno name and negative errno', async () => {
    const s = new ClientSequencer({ firstSeq: 2 });
    const { reply } = s.request(Command.VCHAN_CLIENT_INIT, { serverDomain: 0, port: 512, timeoutMs: 0, flags: 0 });
    s.receive(frameOf(hex`11 00 08 00 02 00 00 00 92 ff ff ff 00 00 00 00`));
    await assert.rejects(reply, (e: unknown) => {
      assert.ok(e instanceof DaemonError);
      assert.equal(e.code, 'KVMCHAN_E_DAEMON_ETIMEDOUT');
      assert.equal(e.errno, -110);
      return true;
    });
  });
});

describe('encode errors (KVMCHAN_E_ENCODE)', () => {
  const guestInfo = {
    handle: 1,
    role: 1 as const,
    readOrder: 10,
    writeOrder: 10,
    localDomain: 5,
    peerDomain: 0,
    port: 1,
    pool: 2,
    vector: 3,
    peerId: 0,
    peerVector: 3,
    shmOffset: 0,
    shmLength: 4096 + 2048,
  };
  const pool = { pool: 2, peerId: 1, vectors: 64, size: 2 ** 24, socket: 'pool-2.sock' };

  const cases: [string, () => unknown][] = [
    ['u32 negative', () => encodeRequest(Command.VCHAN_CLOSE, 1, { handle: -1 })],
    ['u32 too big', () => encodeRequest(Command.VCHAN_CLOSE, 1, { handle: 2 ** 32 })],
    ['u32 fractional', () => encodeRequest(Command.VCHAN_CLOSE, 1, { handle: 1.5 })],
    ['u16 too big', () => encodeRequest(Command.CHECK_COMMAND, 1, { id: 0x10000 })],
    ['missing field', () => encodeRequest(Command.VCHAN_CLOSE, 1, {} as never)],
    ['body not an object', () => encodeRequest(Command.VCHAN_CLOSE, 1, null as never)],
    ['flags outside the mask', () => encodeRequest(Command.VCHAN_CLIENT_INIT, 1, { serverDomain: 0, port: 0, timeoutMs: 0, flags: 1 })],
    ['seq negative', () => encodeRequest(Command.GET_VERSION, -1, {})],
    ['seq too big', () => encodeRequest(Command.GET_VERSION, 2 ** 32, {})],
    ['unknown command', () => encodeRequest(0x7777 as never, 1, {} as never)],
    ['positive err', () => encodeReply(Command.GET_VERSION, 1, 5)],
    ['err with a body', () => (encodeReply as (...args: unknown[]) => Buffer)(Command.GET_VERSION, 1, -2, { version: 1, maxPayload: 1 })],
    ['success reply without its body', () => encodeReply(Command.GET_VERSION, 1, 0)],
    ['success reply for an unknown id', () => encodeReply(0x7777, 1, 0)],
    ['reply with an event id', () => encodeReply(0x8001, 0, -1)],
    ['enum out of range', () => encodeEvent(0x8001, { reason: 7 as never })],
    ['unknown event', () => encodeEvent(0x8fff as never, {} as never)],
    [
      'ring order out of range',
      () =>
        encodeReply(Command.VCHAN_SERVER_INIT, 1, 0, {
          handle: 1,
          role: 0,
          readOrder: 9,
          writeOrder: 10,
          localDomain: 0,
          peerDomain: 1,
          port: 1,
          shmOffset: 0,
          shmLength: 1,
        }),
    ],
    [
      'u64 above 2^53-1',
      () =>
        encodeReply(Command.VCHAN_SERVER_INIT, 1, 0, {
          handle: 1,
          role: 0,
          readOrder: 10,
          writeOrder: 10,
          localDomain: 0,
          peerDomain: 1,
          port: 1,
          shmOffset: 2 ** 53,
          shmLength: 1,
        }),
    ],
    [
      'name too long',
      () => encodeReply(Command.LIST_DOMAINS, 1, 0, { next: 0, entries: [{ domain: 0, flags: 0, vchans: 0, name: 'x'.repeat(32) }] }),
    ],
    [
      'name with a NUL',
      () => encodeReply(Command.LIST_DOMAINS, 1, 0, { next: 0, entries: [{ domain: 0, flags: 0, vchans: 0, name: 'a\0b' }] }),
    ],
    ['entries not an array', () => encodeReply(Command.LIST_DOMAINS, 1, 0, { next: 0, entries: 3 as never })],
    [
      'list beyond MAX_PAYLOAD',
      () =>
        encodeReply(Command.LIST_DOMAINS, 1, 0, {
          next: 0,
          entries: Array.from({ length: MAX_DOMAIN_ENTRIES + 1 }, (_, i) => ({ domain: i, flags: 0, vchans: 0, name: 'vm' })),
        }),
    ],
    ['raw frame payload above u16', () => encodeFrame(1, 1, Buffer.alloc(0x10000))],
    ['raw frame id above u16', () => encodeFrame(0x10000, 1, Buffer.alloc(0))],
    [
      'guest flags outside the mask',
      () => encodeRequest(Command.GUEST_VCHAN_CLIENT_INIT, 1, { conn: 1, serverDomain: 0, port: 0, timeoutMs: 0, flags: 1 }),
    ],
    ['guest conn missing', () => encodeRequest(Command.GUEST_VCHAN_CLOSE, 1, { handle: 1 } as never)],
    [
      'GuestVchanInfo without pool coordinates',
      () => encodeReply(Command.GUEST_VCHAN_SERVER_INIT, 1, 0, { ...guestInfo, pool: undefined } as never),
    ],
    ['GuestVchanInfo role out of range', () => encodeReply(Command.GUEST_VCHAN_CLIENT_INIT, 1, 0, { ...guestInfo, role: 2 as never })],
    [
      'GuestVchanInfo shm_length above 2^53-1',
      () => encodeReply(Command.GUEST_VCHAN_CLIENT_INIT, 1, 0, { ...guestInfo, shmLength: 2 ** 53 }),
    ],
    ['GUEST_HELLO name too long', () => encodeReply(Command.GUEST_HELLO, 1, 0, { domain: 1, name: 'x'.repeat(32) })],
    ['POOL_ADDED socket name too long', () => encodeEvent(Event.POOL_ADDED, { ...pool, socket: 's'.repeat(64) })],
    ['POOL_ADDED socket name with a NUL', () => encodeEvent(Event.POOL_ADDED, { ...pool, socket: 'a\0b' })],
    ['POOL_ADDED vectors negative', () => encodeEvent(Event.POOL_ADDED, { ...pool, vectors: -1 })],
  ];
  for (const [name, fn] of cases) {
    test(name, () => {
      const e = expectThrow(fn, WireErrorCode.ENCODE, EncodeError);
      assert.equal(e.fatal, false);
    });
  }

  test('the longest names fit: 31-byte GUEST_HELLO name, 63-byte POOL_ADDED socket', () => {
    const hello = encodeReply(Command.GUEST_HELLO, 1, 0, { domain: 1, name: 'x'.repeat(31) });
    assert.equal(hello.length, 8 + 8 + 40);
    const ev = encodeEvent(Event.POOL_ADDED, { ...pool, socket: 's'.repeat(63) });
    assert.equal(ev.length, 8 + 88);
    assert.equal(ev[8 + 24 + 63], 0);
  });

  test('a list of exactly MAX_DOMAIN_ENTRIES fits MAX_PAYLOAD', () => {
    const buf = encodeReply(Command.LIST_DOMAINS, 1, 0, {
      next: 0,
      entries: Array.from({ length: MAX_DOMAIN_ENTRIES }, (_, i) => ({ domain: i, flags: 0, vchans: 0, name: 'vm' })),
    });
    assert.equal(MAX_DOMAIN_ENTRIES, 341);
    assert.equal(buf.length, 8 + 16 + 341 * 48);
    assert.ok(decodeReply(frameOf(buf)).ok);
  });
});

test('every WireErrorCode is produced by some input above', () => {
  const missing = Object.values(WireErrorCode).filter((c) => !covered.has(c));
  assert.deepEqual(missing, []);
});
