/**
 * The message table, constants, field descriptors, buffer reader/writer and allow masks
 * (docs/wire-protocol.md §1, §6, §8).
 */
import assert from 'node:assert/strict';
import { constants as osConstants } from 'node:os';
import { describe, test } from 'node:test';
import { BufferReader } from '../../src/protocol/buffer-reader.js';
import { BufferWriter } from '../../src/protocol/buffer-writer.js';
import { fixedString, struct, type Struct, u32, u8 } from '../../src/protocol/fields.js';
import { GUEST_VCHAN_INFO, MAX_REGION_ENTRIES, REGION_ENTRY } from '../../src/protocol/messages.js';
import {
  type AnyEvent,
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
  Event,
  EVENT_BIT,
  EVENTS,
  isCommandId,
  isEventId,
  MAX_FRAME,
  MAX_PAYLOAD,
  MAX_VCHAN_ENTRIES,
  messageName,
  PayloadError,
  RESERVED_RANGES,
  TRANSPORT_OF,
  type Transport,
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
    assert.equal(GUEST_VCHAN_INFO.fixedSize, 56);
    assert.equal(DOMAIN_ENTRY.fixedSize, 48);
    assert.equal(VCHAN_ENTRY.fixedSize, 48);
    assert.equal(MAX_VCHAN_ENTRIES, 341);
    assert.equal(REGION_ENTRY.fixedSize, 32);
    assert.equal(MAX_REGION_ENTRIES, 511);
    const sizes = Object.fromEntries(Object.values(COMMANDS).map((c) => [c.name, [c.request.fixedSize, c.reply.fixedSize, c.replyFds]]));
    assert.deepEqual(sizes, {
      GET_VERSION: [0, 8, 0],
      CHECK_COMMAND: [8, 0, 0],
      VCHAN_SERVER_INIT: [16, 40, 3],
      VCHAN_CLIENT_INIT: [16, 40, 3],
      VCHAN_CLOSE: [8, 0, 0],
      LIST_DOMAINS: [8, 8, 0],
      LIST_VCHANS: [8, 8, 0],
      LIST_POOLS: [8, 8, 0],
      SHM_SHARE: [8, 32, 1],
      SHM_MAP: [8, 32, 1],
      SHM_UNMAP: [8, 0, 0],
      SHM_RELEASE: [8, 0, 0],
      LIST_REGIONS: [8, 8, 0],
      GUEST_HELLO: [8, 40, 0],
      GUEST_VCHAN_SERVER_INIT: [24, 56, 0],
      GUEST_VCHAN_CLIENT_INIT: [24, 56, 0],
      GUEST_VCHAN_CLOSE: [8, 0, 0],
      GUEST_CONN_CLOSED: [8, 0, 0],
      GUEST_SHM_SHARE: [16, 40, 0],
      GUEST_SHM_MAP: [16, 40, 0],
      GUEST_SHM_UNMAP: [16, 0, 0],
      GUEST_SHM_RELEASE: [8, 0, 0],
    });
    assert.equal(COMMANDS[Command.GUEST_VCHAN_SERVER_INIT].reply, GUEST_VCHAN_INFO);
    assert.equal(COMMANDS[Command.GUEST_VCHAN_CLIENT_INIT].reply, GUEST_VCHAN_INFO);
    const events = Object.fromEntries(Object.values(EVENTS).map((e) => [e.name, e.body.fixedSize]));
    assert.deepEqual(events, { SHUTDOWN: 8, PEER_CLOSED: 8, POOL_ADDED: 88 });
  });

  test('transports: fd-carrying commands seqpacket-only, guest control stream-only, the rest both', () => {
    const both: Transport[] = ['seqpacket', 'stream'];
    const transports = Object.fromEntries(Object.values(COMMANDS).map((c) => [c.name, c.transports]));
    assert.deepEqual(transports, {
      GET_VERSION: both,
      CHECK_COMMAND: both,
      VCHAN_SERVER_INIT: ['seqpacket'],
      VCHAN_CLIENT_INIT: ['seqpacket'],
      VCHAN_CLOSE: both,
      LIST_DOMAINS: both,
      LIST_VCHANS: both,
      LIST_POOLS: both,
      // The region commands are seqpacket only: a guest daemon speaks its own GUEST_SHM_*
      // (docs/shmem.md §6), so UNMAP and RELEASE stay with the two that carry an fd.
      SHM_SHARE: ['seqpacket'],
      SHM_MAP: ['seqpacket'],
      SHM_UNMAP: ['seqpacket'],
      SHM_RELEASE: ['seqpacket'],
      // Regions are a local matter: listed where they are served, on the local socket.
      LIST_REGIONS: ['seqpacket'],
      GUEST_HELLO: ['stream'],
      GUEST_VCHAN_SERVER_INIT: ['stream'],
      GUEST_VCHAN_CLIENT_INIT: ['stream'],
      GUEST_VCHAN_CLOSE: ['stream'],
      GUEST_CONN_CLOSED: ['stream'],
      GUEST_SHM_SHARE: ['stream'],
      GUEST_SHM_MAP: ['stream'],
      GUEST_SHM_UNMAP: ['stream'],
      GUEST_SHM_RELEASE: ['stream'],
    });
    for (const c of Object.values(COMMANDS)) {
      assert.equal(c.requestFds, 0, `${c.name}: no request carries fds`);
      if (c.replyFds > 0) assert.ok(!c.transports.includes('stream'), `${c.name} carries fds`);
    }
    const eventTransports = Object.fromEntries(Object.values(EVENTS).map((e) => [e.name, e.transports]));
    assert.deepEqual(eventTransports, { SHUTDOWN: both, PEER_CLOSED: ['seqpacket'], POOL_ADDED: ['stream'] });
  });

  test('field alignment (§1): every field naturally aligned', () => {
    // Offsets within the payload: reply data starts after the 8-byte {err, pad}, list entries
    // after the 8-byte {count, next}. Every layout is a whole number of u32s.
    const misaligned = new Set<string>();
    const walk = (st: Struct<unknown>, base: number): void => {
      assert.equal(st.fixedSize % 4, 0, `${st.name}: size ${st.fixedSize}`);
      let at = 0;
      for (const e of st.entries) {
        if ('kind' in e) {
          const bytes = e.kind === 'pad' ? e.bytes : 4; // pad, or a u32 count
          if ((base + at) % bytes !== 0) misaligned.add(`${st.name}.pad@${at}`);
          at += bytes;
          continue;
        }
        const [key, field] = e;
        if (field.info.kind === 'array') {
          assert.equal(field.info.entry.fixedSize % 8, 0, `${st.name}.${key}: entries keep 8-byte alignment`);
          walk(field.info.entry, base + at);
          continue;
        }
        const align = field.info.kind === 'string' ? 1 : field.info.bytes;
        if ((base + at) % align !== 0) misaligned.add(`${st.name}.${key}@${at}`);
        at += field.info.bytes;
      }
    };
    for (const c of Object.values(COMMANDS)) {
      walk(c.request, 0);
      walk(c.reply, 8);
    }
    for (const e of Object.values(EVENTS)) walk(e.body, 0);
    assert.deepEqual([...misaligned].sort(), []);
  });

  test('ids: commands below the event bit, events above; names for logs', () => {
    for (const id of Object.values(Command)) assert.ok(id < EVENT_BIT && isCommandId(id) && !isEventId(id));
    for (const id of Object.values(Event)) assert.ok(id >= EVENT_BIT && isEventId(id) && !isCommandId(id));
    assert.equal(messageName(0x0011), 'VCHAN_CLIENT_INIT');
    assert.equal(messageName(0x0101), 'GUEST_HELLO');
    assert.equal(messageName(0x0113), 'GUEST_CONN_CLOSED');
    assert.equal(messageName(0x8001), 'EVENT_SHUTDOWN');
    assert.equal(messageName(0x8101), 'EVENT_POOL_ADDED');
    assert.equal(messageName(0x0030), 'SHM_SHARE');
    assert.equal(messageName(0x0034), 'LIST_REGIONS');
    assert.equal(messageName(0x0035), '0x0035');
    assert.equal(messageName(0x0102), '0x0102');
  });

  test('reserved ranges (§6.9) hold no command and are -ENOSYS on every connection kind', () => {
    assert.deepEqual(
      RESERVED_RANGES.map(([first, last]) => [first, last]),
      [
        [0x0035, 0x003f],
        [0x0102, 0x010f],
        [0x0118, 0x01ff],
      ],
    );
    const masks = [AllowMask.forKind('local'), AllowMask.forKind('guest-control')];
    for (const [first, last] of RESERVED_RANGES) {
      for (let id = first; id <= last; id++) {
        assert.ok(!isCommandId(id), `0x${id.toString(16)} is reserved`);
        for (const mask of masks) {
          for (const t of ['seqpacket', 'stream'] as const) assert.equal(checkCommand(id, mask, t), -Errno.ENOSYS);
        }
      }
    }
    // The guest-control block 0x0100–0x01FF: the nine commands, the two reserved ranges, and
    // 0x0100, unassigned (unknown like any id outside the table).
    const guestBlock = Object.values(Command).filter((id) => id >= 0x0100 && id <= 0x01ff);
    assert.deepEqual(guestBlock, [0x0101, 0x0110, 0x0111, 0x0112, 0x0113, 0x0114, 0x0115, 0x0116, 0x0117]);
    assert.ok(!isCommandId(0x0100));
  });
});

describe('allow masks and CHECK_COMMAND (§6.2, §8)', () => {
  const guestCommands = [
    Command.GUEST_HELLO,
    Command.GUEST_VCHAN_SERVER_INIT,
    Command.GUEST_VCHAN_CLIENT_INIT,
    Command.GUEST_VCHAN_CLOSE,
    Command.GUEST_CONN_CLOSED,
    Command.GUEST_SHM_SHARE,
    Command.GUEST_SHM_MAP,
    Command.GUEST_SHM_UNMAP,
    Command.GUEST_SHM_RELEASE,
  ];

  test('local clients may use every seqpacket command; the stream-only GUEST_* commands are -EPERM', () => {
    assert.equal(TRANSPORT_OF.local, 'seqpacket');
    const mask = AllowMask.forKind('local');
    const seqpacketIds = Object.values(COMMANDS)
      .filter((c) => c.transports.includes('seqpacket'))
      .map((c) => c.id);
    assert.deepEqual(
      [...DEFAULT_COMMANDS.local].sort((a, b) => a - b),
      seqpacketIds.sort((a, b) => a - b),
    );
    for (const c of Object.values(COMMANDS)) {
      assert.equal(checkCommand(c.id, mask, TRANSPORT_OF.local), c.transports.includes('seqpacket') ? 0 : -Errno.EPERM, c.name);
    }
    const streamOnly = Object.values(COMMANDS)
      .filter((c) => !c.transports.includes('seqpacket'))
      .map((c) => c.id);
    assert.deepEqual(streamOnly, guestCommands);
    // Even a mask that lists them cannot open them on seqpacket: the transport refuses first.
    for (const id of guestCommands) assert.equal(checkCommand(id, new AllowMask(guestCommands), 'seqpacket'), -Errno.EPERM);
  });

  test('guest control: handshake, the five GUEST_* commands and the three lists, on the stream', () => {
    assert.equal(TRANSPORT_OF['guest-control'], 'stream');
    const allowed: number[] = [
      Command.GET_VERSION,
      Command.CHECK_COMMAND,
      ...guestCommands,
      Command.LIST_DOMAINS,
      Command.LIST_VCHANS,
      Command.LIST_POOLS,
    ];
    assert.deepEqual(DEFAULT_COMMANDS['guest-control'], allowed);
    const mask = AllowMask.forKind('guest-control');
    for (const c of Object.values(COMMANDS)) {
      assert.equal(checkCommand(c.id, mask, 'stream'), allowed.includes(c.id) ? 0 : -Errno.EPERM, c.name);
    }
    // VCHAN_CLOSE is outside the mask (a guest closes with GUEST_VCHAN_CLOSE); allowing it makes it
    // usable. The fd-carrying commands stay -EPERM on the stream whatever the mask says.
    mask.allow(Command.VCHAN_SERVER_INIT).allow(Command.VCHAN_CLIENT_INIT).allow(Command.VCHAN_CLOSE);
    assert.equal(checkCommand(Command.VCHAN_SERVER_INIT, mask, 'stream'), -Errno.EPERM);
    assert.equal(checkCommand(Command.VCHAN_CLIENT_INIT, mask, 'stream'), -Errno.EPERM);
    assert.equal(checkCommand(Command.VCHAN_CLOSE, mask, 'stream'), 0);
    // Narrowing by policy.
    mask.deny(Command.LIST_VCHANS);
    assert.equal(checkCommand(Command.LIST_VCHANS, mask, 'stream'), -Errno.EPERM);
    // Masks are copies: the defaults are untouched.
    assert.deepEqual(DEFAULT_COMMANDS['guest-control'], allowed);
    assert.ok(!AllowMask.forKind('guest-control').allows(Command.VCHAN_CLOSE));
  });

  test('unknown, reserved and event ids are -ENOSYS', () => {
    for (const kind of ['local', 'guest-control'] as const) {
      const mask = AllowMask.forKind(kind);
      for (const id of [0, 0x35, 0x100, 0x102, 0x118, 0x1ff, 0x7777, 0x8001, 0x8101, 0xffff]) {
        assert.equal(checkCommand(id, mask, TRANSPORT_OF[kind]), -Errno.ENOSYS, `0x${id.toString(16)} on ${kind}`);
      }
    }
  });

  test('deny never removes the handshake commands', () => {
    const mask = AllowMask.forKind('local').deny(Command.GET_VERSION).deny(Command.CHECK_COMMAND).deny(Command.VCHAN_CLOSE);
    assert.ok(mask.allows(Command.GET_VERSION));
    assert.ok(mask.allows(Command.CHECK_COMMAND));
    assert.ok(!mask.allows(Command.VCHAN_CLOSE));
    assert.equal(checkCommand(Command.VCHAN_CLOSE, mask, 'seqpacket'), -Errno.EPERM);
    const guest = AllowMask.forKind('guest-control').deny(Command.GET_VERSION).deny(Command.GUEST_HELLO);
    assert.equal(checkCommand(Command.GET_VERSION, guest, 'stream'), 0);
    assert.equal(checkCommand(Command.GUEST_HELLO, guest, 'stream'), -Errno.EPERM);
  });
});

describe('buffer reader / writer', () => {
  test('little-endian everywhere', () => {
    const w = new BufferWriter(21);
    w.u8(0x01)
      .u16(0x0302)
      .u32(0x07060504)
      .s32(-2)
      .u64(0x0f0e0d0c0b0a09 % 2 ** 53)
      .zero(2);
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
    assert.throws(
      () => r.u32(),
      (e: unknown) => e instanceof PayloadError && e.code === WireErrorCode.BAD_LENGTH,
    );
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
    assert.throws(
      () => struct<{ list: { x: number }[] }>('L')([['list', { ...u32, info: { kind: 'array', entry: good } } as never]]),
      TypeError,
    );
  });
});

describe('typed unions', () => {
  test('switch (req.id) narrows the request body; reply.ok then id the reply body; event id the event body', () => {
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
        case Command.LIST_POOLS:
          return `list from ${req.body.start}`;
        case Command.SHM_SHARE:
          return `share ${req.body.pages} pages with ${req.body.domain}`;
        case Command.SHM_MAP:
        case Command.SHM_UNMAP:
          return `region ${req.body.domain}:${req.body.id}`;
        case Command.SHM_RELEASE:
          return `release ${req.body.id}`;
        case Command.LIST_REGIONS:
          return `regions from ${req.body.start}`;
        case Command.GUEST_HELLO:
          return `hello v${req.body.version}`;
        case Command.GUEST_VCHAN_SERVER_INIT:
          return `conn ${req.body.conn} server ${req.body.peerDomain}:${req.body.port} ${req.body.readMin}/${req.body.writeMin}`;
        case Command.GUEST_VCHAN_CLIENT_INIT:
          return `conn ${req.body.conn} client ${req.body.serverDomain}:${req.body.port} ${req.body.timeoutMs} ${req.body.flags}`;
        case Command.GUEST_VCHAN_CLOSE:
          return `conn ${req.body.conn} close ${req.body.handle}`;
        case Command.GUEST_CONN_CLOSED:
          return `conn ${req.body.conn} closed`;
        case Command.GUEST_SHM_SHARE:
          return `conn ${req.body.conn} share ${req.body.pages} pages with ${req.body.domain}`;
        case Command.GUEST_SHM_MAP:
        case Command.GUEST_SHM_UNMAP:
          return `conn ${req.body.conn} region ${req.body.domain}:${req.body.id}`;
        case Command.GUEST_SHM_RELEASE:
          return `conn ${req.body.conn} release ${req.body.id}`;
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
        case Command.LIST_POOLS:
          return rep.body.entries.map((p) => `pool ${p.pool} ${p.memberA}+${p.memberB}`).join(',');
        case Command.SHM_SHARE:
        case Command.SHM_MAP:
          return `region ${rep.body.ownerDomain}:${rep.body.id} at ${rep.body.shmOffset}+${rep.body.shmLength}`;
        case Command.LIST_REGIONS:
          return rep.body.entries.map((r) => `region ${r.ownerDomain}:${r.id} uid ${r.creatorUid}`).join(',');
        case Command.GUEST_HELLO:
          return `domain ${rep.body.domain} ${rep.body.name}`;
        case Command.GUEST_VCHAN_SERVER_INIT:
        case Command.GUEST_VCHAN_CLIENT_INIT:
          return `handle ${rep.body.handle} pool ${rep.body.pool} vector ${rep.body.vector} kicks ${rep.body.peerId}/${rep.body.peerVector}`;
        case Command.GUEST_SHM_SHARE:
        case Command.GUEST_SHM_MAP:
          return `region ${rep.body.ownerDomain}:${rep.body.id} in pool ${rep.body.pool} at ${rep.body.shmOffset}+${rep.body.shmLength}`;
        case Command.CHECK_COMMAND:
        case Command.VCHAN_CLOSE:
        case Command.SHM_UNMAP:
        case Command.SHM_RELEASE:
        case Command.GUEST_VCHAN_CLOSE:
        case Command.GUEST_CONN_CLOSED:
        case Command.GUEST_SHM_UNMAP:
        case Command.GUEST_SHM_RELEASE:
          return `empty ${Object.keys(rep.body).length}`;
      }
    }
    function describeEvent(ev: AnyEvent): string {
      switch (ev.id) {
        case Event.SHUTDOWN:
          return `shutdown ${ev.body.reason}`;
        case Event.PEER_CLOSED:
          return `peer closed ${ev.body.handle}`;
        case Event.POOL_ADDED:
          return `pool ${ev.body.pool} peer ${ev.body.peerId} ${ev.body.socket}`;
      }
    }
    const texts = fixtures.map((f) =>
      f.direction === 'request' ? describeRequest(f.value) : f.direction === 'reply' ? describeReply(f.value) : describeEvent(f.value),
    );
    for (const want of [
      'client 0:512 4294967295',
      'dom0,wörk-vm',
      'handle 42 role 1 fds 3',
      'hello v1',
      'conn 7 server 0:5000 4096/65536',
      'conn 8 client 6:43981 4294967295 0',
      'conn 7 close 9',
      'conn 8 closed',
      'domain 5 sys-net',
      'handle 10 pool 4 vector 17 kicks 2/17',
      'empty 0',
      'shutdown 1',
      'pool 2 peer 1 pool-2.sock',
      'region 0:42 uid 1000,region 5:2654435769 uid 4294967295',
    ]) {
      assert.ok(texts.includes(want), want);
    }
  });
});
