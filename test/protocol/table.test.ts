/**
 * The message table, constants, field descriptors, buffer reader/writer and allow masks
 * (docs/wire-protocol.md §1, §6, §8).
 */
import assert from 'node:assert/strict';
import { constants as osConstants } from 'node:os';
import { describe, test } from 'node:test';
import { BufferReader } from '../../src/protocol/buffer-reader.js';
import { BufferWriter } from '../../src/protocol/buffer-writer.js';
import { fixedString, struct, u32, u8 } from '../../src/protocol/fields.js';
import {
  type AnyReply,
  type AnyRequest,
  AllowMask,
  checkCommand,
  Command,
  COMMANDS,
  DEFAULT_COMMANDS,
  DOMAIN_ENTRY,
  EncodeError,
  Errno,
  errnoName,
  errnoValue,
  EVENT_BIT,
  EVENTS,
  isCommandId,
  isEventId,
  MAX_FRAME,
  MAX_PAYLOAD,
  MAX_VCHAN_ENTRIES,
  messageName,
  PayloadError,
  TRANSPORT_OF,
  VCHAN_ENTRY,
  VCHAN_INFO,
  WireErrorCode,
} from '../../src/protocol/index.js';
import { fixtures } from './fixtures.js';

describe('constants', () => {
  test('errno values match this platform (Linux asm-generic numbering)', { skip: process.platform !== 'linux' }, () => {
    const table = osConstants.errno as Record<string, number>;
    let checked = 0;
    for (const [name, value] of Object.entries(Errno)) {
      // Node's table lacks a few (ESHUTDOWN); those were checked against <asm-generic/errno.h>.
      if (table[name] === undefined) continue;
      assert.equal(value, table[name], name);
      checked++;
    }
    assert.ok(checked >= Object.keys(Errno).length - 2);
  });

  test('errno name <-> number', () => {
    assert.equal(errnoName(2), 'ENOENT');
    assert.equal(errnoName(-110), 'ETIMEDOUT');
    assert.equal(errnoName(-9999), 'E9999');
    assert.equal(errnoValue('EMSGSIZE'), 90);
    assert.equal(errnoValue('toString'), undefined);
    assert.equal(errnoValue('ENOPE'), undefined);
  });

  test('frame limits', () => {
    assert.equal(MAX_PAYLOAD, 16384);
    assert.equal(MAX_FRAME, 16392);
  });
});

describe('message table', () => {
  test('layout sizes are those of the spec', () => {
    assert.equal(VCHAN_INFO.fixedSize, 40);
    assert.equal(DOMAIN_ENTRY.fixedSize, 48);
    assert.equal(VCHAN_ENTRY.fixedSize, 48);
    assert.equal(MAX_VCHAN_ENTRIES, 341);
    const sizes = Object.fromEntries(Object.values(COMMANDS).map((c) => [c.name, [c.request.fixedSize, c.reply.fixedSize, c.replyFds]]));
    assert.deepEqual(sizes, {
      GET_VERSION: [0, 8, 0],
      CHECK_COMMAND: [8, 0, 0],
      VCHAN_SERVER_INIT: [16, 40, 3],
      VCHAN_CLIENT_INIT: [16, 40, 3],
      VCHAN_CLOSE: [8, 0, 0],
      LIST_DOMAINS: [8, 8, 0],
      LIST_VCHANS: [8, 8, 0],
    });
    assert.equal(EVENTS[0x8001].body.fixedSize, 8);
  });

  test('no request carries fds; fd-carrying replies are seqpacket-only', () => {
    for (const c of Object.values(COMMANDS)) {
      assert.equal(c.requestFds, 0, c.name);
      if (c.replyFds > 0) assert.deepEqual(c.transports, ['seqpacket'], c.name);
      else assert.deepEqual(c.transports, ['seqpacket', 'stream'], c.name);
    }
  });

  test('ids: commands below the event bit, events above; names for logs', () => {
    for (const id of Object.values(Command)) assert.ok(id < EVENT_BIT && isCommandId(id) && !isEventId(id));
    assert.ok(isEventId(0x8001) && !isCommandId(0x8001));
    assert.equal(messageName(0x0011), 'VCHAN_CLIENT_INIT');
    assert.equal(messageName(0x8001), 'EVENT_SHUTDOWN');
    assert.equal(messageName(0x0030), '0x0030');
  });
});

describe('allow masks and CHECK_COMMAND (§6.2, §8)', () => {
  test('local clients may use every command on seqpacket', () => {
    const mask = AllowMask.forKind('local');
    for (const id of Object.values(Command)) assert.equal(checkCommand(id, mask, TRANSPORT_OF.local), 0);
  });

  test('guest control: handshake only; fd commands are -EPERM on the stream even if allowed', () => {
    const mask = AllowMask.forKind('guest-control');
    assert.deepEqual(DEFAULT_COMMANDS['guest-control'], [Command.GET_VERSION, Command.CHECK_COMMAND]);
    assert.equal(checkCommand(Command.GET_VERSION, mask, 'stream'), 0);
    assert.equal(checkCommand(Command.LIST_DOMAINS, mask, 'stream'), -Errno.EPERM);
    mask.allow(Command.VCHAN_SERVER_INIT).allow(Command.LIST_DOMAINS);
    assert.equal(checkCommand(Command.VCHAN_SERVER_INIT, mask, 'stream'), -Errno.EPERM);
    assert.equal(checkCommand(Command.LIST_DOMAINS, mask, 'stream'), 0);
  });

  test('unknown, reserved and event ids are -ENOSYS', () => {
    const mask = AllowMask.forKind('local');
    for (const id of [0, 0x30, 0x100, 0x7777, 0x8001, 0xffff]) assert.equal(checkCommand(id, mask, 'seqpacket'), -Errno.ENOSYS);
  });

  test('deny never removes the handshake commands', () => {
    const mask = AllowMask.forKind('local').deny(Command.GET_VERSION).deny(Command.CHECK_COMMAND).deny(Command.VCHAN_CLOSE);
    assert.ok(mask.allows(Command.GET_VERSION));
    assert.ok(mask.allows(Command.CHECK_COMMAND));
    assert.ok(!mask.allows(Command.VCHAN_CLOSE));
    assert.equal(checkCommand(Command.VCHAN_CLOSE, mask, 'seqpacket'), -Errno.EPERM);
  });
});

describe('buffer reader / writer', () => {
  test('little-endian everywhere', () => {
    const w = new BufferWriter(21);
    w.u8(0x01).u16(0x0302).u32(0x07060504).s32(-2).u64(0x0f0e0d0c0b0a09 % 2 ** 53).zero(2);
    assert.equal(w.finish().toString('hex'), '01' + '0203' + '04050607' + 'feffffff' + '090a0b0c0d0e0f00' + '0000');
    const r = new BufferReader(w.finish());
    assert.deepEqual([r.u8(), r.u16(), r.u32(), r.s32(), r.u64()], [1, 0x0302, 0x07060504, -2, 0x0f0e0d0c0b0a09]);
    assert.equal(r.remaining, 2);
  });

  test('u64 limits: 2^53-1 is fine, 2^53 is BAD_RANGE', () => {
    assert.equal(new BufferReader(Buffer.from('ffffffffffff1f00', 'hex')).u64(), 2 ** 53 - 1);
    assert.throws(
      () => new BufferReader(Buffer.from('0000000000002000', 'hex')).u64(),
      (e: unknown) => e instanceof PayloadError && e.code === WireErrorCode.BAD_RANGE,
    );
    assert.throws(() => new BufferWriter(8).u64(2 ** 53), EncodeError);
  });

  test('reading past the end is BAD_LENGTH, never a RangeError', () => {
    const r = new BufferReader(Buffer.from('010203', 'hex'), 1);
    assert.throws(() => r.u32(), (e: unknown) => e instanceof PayloadError && e.code === WireErrorCode.BAD_LENGTH);
    assert.throws(() => r.bytes(3), PayloadError);
    assert.equal(r.u16(), 0x0302);
    assert.throws(() => r.u8(), PayloadError);
  });

  test('writer over- and underflow are EncodeErrors', () => {
    assert.throws(() => new BufferWriter(1).u16(1), EncodeError);
    assert.throws(() => new BufferWriter(2).u8(1).finish(), EncodeError);
  });
});

describe('field descriptors', () => {
  test('fixed strings: UTF-8, 31 bytes max, multibyte characters counted in bytes', () => {
    const f = fixedString(8);
    const w = new BufferWriter(8);
    f.write(w, 'é€', 'name');
    assert.equal(w.finish().toString('hex'), 'c3a9e282ac000000');
    assert.equal(f.read(new BufferReader(w.finish()), 'name', 0), 'é€');
    assert.throws(() => f.write(new BufferWriter(8), '€€€', 'name'), EncodeError); // 9 bytes
    const ok = new BufferWriter(8);
    f.write(ok, 'abcdefg', 'name');
    assert.equal(ok.finish().toString('hex'), '61626364656667' + '00');
  });

  test('struct() refuses a layout that forgets a property (compile time) or an array count (run time)', () => {
    interface Two {
      a: number;
      b: number;
    }
    // @ts-expect-error -- 'b' has no entry: the compiler demands a second argument naming it.
    const bad = struct<Two>('Two')([['a', u32]]);
    assert.equal(bad.fixedSize, 4);
    const good = struct<Two>('Two')([
      ['a', u32],
      ['b', u8],
    ]);
    assert.equal(good.fixedSize, 5);
    assert.throws(() => struct<{ list: { x: number }[] }>('L')([['list', { ...u32, info: { kind: 'array', entry: good } } as never]]), TypeError);
  });
});

describe('typed unions', () => {
  test('switch (req.id) narrows the request body; reply.ok then id narrows the reply body', () => {
    function describeRequest(req: AnyRequest): string {
      switch (req.id) {
        case Command.GET_VERSION:
          return 'version';
        case Command.CHECK_COMMAND:
          return `check ${req.body.id}`;
        case Command.VCHAN_SERVER_INIT:
          return `server ${req.body.peerDomain}:${req.body.port} ${req.body.readMin}/${req.body.writeMin}`;
        case Command.VCHAN_CLIENT_INIT:
          return `client ${req.body.serverDomain}:${req.body.port} ${req.body.timeoutMs}`;
        case Command.VCHAN_CLOSE:
          return `close ${req.body.handle}`;
        case Command.LIST_DOMAINS:
        case Command.LIST_VCHANS:
          return `list from ${req.body.start}`;
        default:
          return `guest ${req.id}`;
      }
    }
    function describeReply(rep: AnyReply): string {
      if (!rep.ok) return `error ${rep.err}`;
      switch (rep.id) {
        case Command.GET_VERSION:
          return `v${rep.body.version}`;
        case Command.VCHAN_SERVER_INIT:
        case Command.VCHAN_CLIENT_INIT:
          return `handle ${rep.body.handle} role ${rep.body.role} fds ${rep.fds.length}`;
        case Command.LIST_DOMAINS:
          return rep.body.entries.map((d) => d.name).join(',');
        case Command.LIST_VCHANS:
          return rep.body.entries.map((v) => v.bytesServerToClient).join(',');
        default:
          return 'empty';
      }
    }
    const texts = fixtures.map((f) => (f.direction === 'request' ? describeRequest(f.value) : f.direction === 'reply' ? describeReply(f.value) : 'reason' in f.value.body ? f.value.body.reason : f.value.body.pool));
    assert.ok(texts.includes('client 0:512 4294967295'));
    assert.ok(texts.includes('dom0,wörk-vm'));
    assert.ok(texts.includes('handle 42 role 1 fds 3'));
  });
});
