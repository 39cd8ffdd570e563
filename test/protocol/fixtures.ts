/**
 * Byte fixtures for every message, written out by hand from docs/wire-protocol.md (§2, §4, §6,
 * §7, §10) — never produced by the encoder. Each pairs the exact bytes with the object the
 * decoder must produce; the encoder must produce the bytes from the object.
 */
import type { AnyEvent, AnyReply, AnyRequest } from '../../src/protocol/index.js';
import { hex } from './hex.js';

export interface RequestFixture {
  readonly name: string;
  readonly direction: 'request';
  readonly bytes: Buffer;
  readonly value: AnyRequest;
}

export interface ReplyFixture {
  readonly name: string;
  readonly direction: 'reply';
  readonly bytes: Buffer;
  readonly value: AnyReply;
}

export interface EventFixture {
  readonly name: string;
  readonly direction: 'event';
  readonly bytes: Buffer;
  readonly value: AnyEvent;
}

export type Fixture = RequestFixture | ReplyFixture | EventFixture;

const SHM_FDS = [20, 21, 22];

export const fixtures: readonly Fixture[] = [
  // ---- §6.1 GET_VERSION
  {
    name: 'GET_VERSION request',
    direction: 'request',
    bytes: hex`
      01 00 00 00 01 00 00 00        # id 0x0001, size 0, seq 1
    `,
    value: { kind: 'request', id: 0x0001, seq: 1, body: {}, fds: [] },
  },
  {
    name: 'GET_VERSION reply',
    direction: 'reply',
    bytes: hex`
      01 00 10 00 01 00 00 00        # id 0x0001, size 16, seq 1
      00 00 00 00 00 00 00 00        # err 0, pad
      01 00 00 00                    # version 1
      00 40 00 00                    # max_payload 16384
    `,
    value: { kind: 'reply', ok: true, id: 0x0001, seq: 1, err: 0, body: { version: 1, maxPayload: 16384 }, fds: [] },
  },

  // ---- §6.2 CHECK_COMMAND
  {
    name: 'CHECK_COMMAND request',
    direction: 'request',
    bytes: hex`
      02 00 08 00 78 56 34 12        # id 0x0002, size 8, seq 0x12345678
      11 00 00 00                    # id 0x0011, pad16
      00 00 00 00                    # pad32
    `,
    value: { kind: 'request', id: 0x0002, seq: 0x12345678, body: { id: 0x0011 }, fds: [] },
  },
  {
    name: 'CHECK_COMMAND reply: allowed',
    direction: 'reply',
    bytes: hex`
      02 00 08 00 79 56 34 12        # seq 0x12345679
      00 00 00 00 00 00 00 00        # err 0
    `,
    value: { kind: 'reply', ok: true, id: 0x0002, seq: 0x12345679, err: 0, body: {}, fds: [] },
  },
  {
    name: 'CHECK_COMMAND reply: -EPERM',
    direction: 'reply',
    bytes: hex`
      02 00 08 00 78 56 34 12
      ff ff ff ff 00 00 00 00        # err -1 (EPERM)
    `,
    value: { kind: 'reply', ok: false, id: 0x0002, seq: 0x12345678, err: -1, body: undefined, fds: [] },
  },

  // ---- §6.3 VCHAN_SERVER_INIT
  {
    name: 'VCHAN_SERVER_INIT request',
    direction: 'request',
    bytes: hex`
      10 00 10 00 10 00 00 00        # id 0x0010, size 16, seq 16
      03 00 00 00                    # peer_domain 3
      cd ab 00 00                    # port 0xabcd
      00 04 00 00                    # read_min 1024
      00 00 01 00                    # write_min 65536
    `,
    value: {
      kind: 'request',
      id: 0x0010,
      seq: 16,
      body: { peerDomain: 3, port: 0xabcd, readMin: 1024, writeMin: 65536 },
      fds: [],
    },
  },
  {
    name: 'VCHAN_SERVER_INIT reply',
    direction: 'reply',
    bytes: hex`
      10 00 30 00 10 00 00 00        # size 48
      00 00 00 00 00 00 00 00        # err 0
      07 00 00 00                    # handle 7
      00 0a 10 00                    # role server, read_order 10, write_order 16, pad8
      00 00 00 00                    # local_domain 0
      03 00 00 00                    # peer_domain 3
      cd ab 00 00                    # port
      00 00 00 00                    # pad32
      00 00 00 00 00 00 00 00        # shm_offset 0
      00 14 01 00 00 00 00 00        # shm_length 70656 = 4096 + 1024 + 65536
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0010,
      seq: 16,
      err: 0,
      body: {
        handle: 7,
        role: 0,
        readOrder: 10,
        writeOrder: 16,
        localDomain: 0,
        peerDomain: 3,
        port: 0xabcd,
        shmOffset: 0,
        shmLength: 70656,
      },
      fds: SHM_FDS,
    },
  },
  {
    name: 'VCHAN_SERVER_INIT reply: -EEXIST',
    direction: 'reply',
    bytes: hex`
      10 00 08 00 11 00 00 00
      ef ff ff ff 00 00 00 00        # err -17
    `,
    value: { kind: 'reply', ok: false, id: 0x0010, seq: 17, err: -17, body: undefined, fds: [] },
  },

  // ---- §6.4 VCHAN_CLIENT_INIT
  {
    name: 'VCHAN_CLIENT_INIT request',
    direction: 'request',
    bytes: hex`
      11 00 10 00 00 00 00 80        # id 0x0011, size 16, seq 0x80000000
      00 00 00 00                    # server_domain 0
      cd ab 00 00                    # port 0xabcd
      88 13 00 00                    # timeout_ms 5000
      00 00 00 00                    # flags 0
    `,
    value: {
      kind: 'request',
      id: 0x0011,
      seq: 0x80000000,
      body: { serverDomain: 0, port: 0xabcd, timeoutMs: 5000, flags: 0 },
      fds: [],
    },
  },
  {
    name: 'VCHAN_CLIENT_INIT request: wait forever (§10)',
    direction: 'request',
    bytes: hex`
      11 00 10 00 02 00 00 00
      00 00 00 00 00 02 00 00 ff ff ff ff 00 00 00 00
    `,
    value: {
      kind: 'request',
      id: 0x0011,
      seq: 2,
      body: { serverDomain: 0, port: 512, timeoutMs: 0xffffffff, flags: 0 },
      fds: [],
    },
  },
  {
    name: 'VCHAN_CLIENT_INIT reply',
    direction: 'reply',
    bytes: hex`
      11 00 30 00 00 00 00 80
      00 00 00 00 00 00 00 00        # err 0
      2a 00 00 00                    # handle 42
      01 10 0a 00                    # role client, read_order 16, write_order 10, pad8
      03 00 00 00                    # local_domain 3
      00 00 00 00                    # peer_domain 0
      cd ab 00 00                    # port
      00 00 00 00                    # pad32
      00 00 20 00 01 00 00 00        # shm_offset 0x1_0020_0000
      00 14 01 00 00 00 00 00        # shm_length 70656
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0011,
      seq: 0x80000000,
      err: 0,
      body: {
        handle: 42,
        role: 1,
        readOrder: 16,
        writeOrder: 10,
        localDomain: 3,
        peerDomain: 0,
        port: 0xabcd,
        shmOffset: 0x1_0020_0000,
        shmLength: 70656,
      },
      fds: SHM_FDS,
    },
  },
  {
    name: 'VCHAN_CLIENT_INIT reply: -ETIMEDOUT',
    direction: 'reply',
    bytes: hex`
      11 00 08 00 02 00 00 00
      92 ff ff ff 00 00 00 00        # err -110
    `,
    value: { kind: 'reply', ok: false, id: 0x0011, seq: 2, err: -110, body: undefined, fds: [] },
  },

  // ---- §6.5 VCHAN_CLOSE
  {
    name: 'VCHAN_CLOSE request',
    direction: 'request',
    bytes: hex`
      12 00 08 00 03 00 00 00
      2a 00 00 00 00 00 00 00        # handle 42, pad
    `,
    value: { kind: 'request', id: 0x0012, seq: 3, body: { handle: 42 }, fds: [] },
  },
  {
    name: 'VCHAN_CLOSE reply',
    direction: 'reply',
    bytes: hex`
      12 00 08 00 03 00 00 00
      00 00 00 00 00 00 00 00
    `,
    value: { kind: 'reply', ok: true, id: 0x0012, seq: 3, err: 0, body: {}, fds: [] },
  },
  {
    name: 'VCHAN_CLOSE reply: -ENOENT',
    direction: 'reply',
    bytes: hex`
      12 00 08 00 04 00 00 00
      fe ff ff ff 00 00 00 00        # err -2
    `,
    value: { kind: 'reply', ok: false, id: 0x0012, seq: 4, err: -2, body: undefined, fds: [] },
  },

  // ---- §6.6 LIST_DOMAINS
  {
    name: 'LIST_DOMAINS request',
    direction: 'request',
    bytes: hex`
      20 00 08 00 04 00 00 00
      00 00 00 00 00 00 00 00        # start 0, pad
    `,
    value: { kind: 'request', id: 0x0020, seq: 4, body: { start: 0 }, fds: [] },
  },
  {
    name: 'LIST_DOMAINS reply: two entries',
    direction: 'reply',
    bytes: hex`
      20 00 70 00 04 00 00 00        # size 112
      00 00 00 00 00 00 00 00        # err 0
      02 00 00 00                    # count 2
      08 00 00 00                    # next 8
      00 00 00 00                    # [0] domain 0
      05 00 00 00                    #     flags HOST|SELF
      02 00 00 00                    #     vchans 2
      00 00 00 00                    #     pad
      64 6f 6d 30 00 00 00 00 00 00 00 00 00 00 00 00   # name "dom0"
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
      03 00 00 00                    # [1] domain 3
      02 00 00 00                    #     flags CONTROL_UP
      01 00 00 00                    #     vchans 1
      00 00 00 00                    #     pad
      77 c3 b6 72 6b 2d 76 6d 00 00 00 00 00 00 00 00   # name "wörk-vm" (ö = c3 b6)
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0020,
      seq: 4,
      err: 0,
      body: {
        next: 8,
        entries: [
          { domain: 0, flags: 5, vchans: 2, name: 'dom0' },
          { domain: 3, flags: 2, vchans: 1, name: 'wörk-vm' },
        ],
      },
      fds: [],
    },
  },
  {
    name: 'LIST_DOMAINS reply: 31-byte name',
    direction: 'reply',
    bytes: hex`
      20 00 40 00 05 00 00 00        # size 64
      00 00 00 00 00 00 00 00
      01 00 00 00 00 00 00 00        # count 1, next 0
      ff ff ff ff                    # domain 0xffffffff
      00 00 00 80                    # flags: reserved bit 31 set (readers ignore it)
      00 00 00 00 00 00 00 00        # vchans 0, pad
      61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f 70   # "abcdefghijklmnop"
      71 72 73 74 75 76 77 78 79 7a 30 31 32 33 34 00   # "qrstuvwxyz01234", NUL
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0020,
      seq: 5,
      err: 0,
      body: {
        next: 0,
        entries: [{ domain: 0xffffffff, flags: 0x80000000, vchans: 0, name: 'abcdefghijklmnopqrstuvwxyz01234' }],
      },
      fds: [],
    },
  },
  {
    name: 'LIST_DOMAINS reply: empty, end of listing',
    direction: 'reply',
    bytes: hex`
      20 00 10 00 06 00 00 00
      00 00 00 00 00 00 00 00
      00 00 00 00 00 00 00 00        # count 0, next 0
    `,
    value: { kind: 'reply', ok: true, id: 0x0020, seq: 6, err: 0, body: { next: 0, entries: [] }, fds: [] },
  },

  // ---- §6.7 LIST_VCHANS
  {
    name: 'LIST_VCHANS request',
    direction: 'request',
    bytes: hex`
      21 00 08 00 06 00 00 00
      07 00 00 00 00 00 00 00        # start 7, pad
    `,
    value: { kind: 'request', id: 0x0021, seq: 6, body: { start: 7 }, fds: [] },
  },
  {
    name: 'LIST_VCHANS reply',
    direction: 'reply',
    bytes: hex`
      21 00 40 00 06 00 00 00        # size 64
      00 00 00 00 00 00 00 00
      01 00 00 00                    # count 1
      00 00 00 00                    # next 0
      07 00 00 00                    # handle 7
      00 00 00 00                    # server_domain 0
      03 00 00 00                    # client_domain 3
      cd ab 00 00                    # port
      01 02 0a 10                    # server CONNECTED, client WAITING, read_order 10, write_order 16
      e8 03 00 00                    # server_pid 1000
      00 00 00 00                    # client_pid 0
      00 00 00 00                    # pad
      00 00 00 00 00 00 00 00        # bytes_client_to_server 0
      ff ff ff ff ff ff 1f 00        # bytes_server_to_client 2^53-1
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0021,
      seq: 6,
      err: 0,
      body: {
        next: 0,
        entries: [
          {
            handle: 7,
            serverDomain: 0,
            clientDomain: 3,
            port: 0xabcd,
            serverState: 1,
            clientState: 2,
            readOrder: 10,
            writeOrder: 16,
            serverPid: 1000,
            clientPid: 0,
            bytesClientToServer: 0,
            bytesServerToClient: 2 ** 53 - 1,
          },
        ],
      },
      fds: [],
    },
  },

  // ---- §6.10 LIST_POOLS
  {
    name: 'LIST_POOLS request',
    direction: 'request',
    bytes: hex`
      22 00 08 00 0b 00 00 00        # id 0x0022, size 8, seq 11
      00 00 00 00 00 00 00 00        # start 0, pad
    `,
    value: { kind: 'request', id: 0x0022, seq: 11, body: { start: 0 }, fds: [] },
  },
  {
    name: 'LIST_POOLS reply',
    direction: 'reply',
    bytes: hex`
      22 00 40 00 0b 00 00 00        # size 64
      00 00 00 00 00 00 00 00        # err 0, pad
      01 00 00 00                    # count 1
      00 00 00 00                    # next 0
      03 00 00 00                    # pool 3
      01 00 00 00                    # member_a 1
      02 00 00 00                    # member_b 2
      40 00 00 00                    # vectors 64
      3e 00 00 00                    # free_vectors 62
      02 00 00 00                    # vchans 2
      00 03 00 00                    # state READY, joined both, pad16
      00 00 00 00                    # pad
      00 00 00 04 00 00 00 00        # size 64 MiB
      00 c0 fd 03 00 00 00 00        # free_bytes 64 MiB - 144 KiB
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0022,
      seq: 11,
      err: 0,
      body: {
        next: 0,
        entries: [
          {
            pool: 3,
            memberA: 1,
            memberB: 2,
            vectors: 64,
            freeVectors: 62,
            vchans: 2,
            state: 0,
            joined: 3,
            size: 0x4000000,
            freeBytes: 0x3fdc000,
          },
        ],
      },
      fds: [],
    },
  },

  // ---- §6.11 shared-memory regions (docs/shmem.md)
  {
    name: 'SHM_SHARE request',
    direction: 'request',
    bytes: hex`
      30 00 08 00 03 00 00 00        # id 0x0030, size 8, seq 3
      00 00 00 00                    # domain 0 (target)
      a4 1f 00 00                    # pages 8100 (3840 x 2160 x 4 bytes)
    `,
    value: { kind: 'request', id: 0x0030, seq: 3, body: { domain: 0, pages: 8100 }, fds: [] },
  },
  {
    name: 'SHM_SHARE reply',
    direction: 'reply',
    bytes: hex`
      30 00 28 00 03 00 00 00        # size 40, seq 3
      00 00 00 00 00 00 00 00        # err 0, pad
      b9 79 37 9e                    # id 0x9e3779b9
      00 00 00 00                    # owner_domain 0
      00 00 00 00                    # target_domain 0
      a4 1f 00 00                    # pages 8100
      00 00 00 00 00 00 00 00        # shm_offset 0
      00 40 fa 01 00 00 00 00        # shm_length 8100 x 4096
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0030,
      seq: 3,
      err: 0,
      body: { id: 0x9e3779b9, ownerDomain: 0, targetDomain: 0, pages: 8100, shmOffset: 0, shmLength: 0x1fa4000 },
      fds: [20],
    },
  },
  {
    name: 'SHM_SHARE reply: -EDQUOT',
    direction: 'reply',
    bytes: hex`
      30 00 08 00 03 00 00 00
      86 ff ff ff 00 00 00 00        # err -122
    `,
    value: { kind: 'reply', ok: false, id: 0x0030, seq: 3, err: -122, body: undefined, fds: [] },
  },
  {
    name: 'SHM_MAP request',
    direction: 'request',
    bytes: hex`
      31 00 08 00 02 00 00 00        # id 0x0031, size 8, seq 2
      05 00 00 00                    # domain 5 (owner)
      b9 79 37 9e                    # id 0x9e3779b9
    `,
    value: { kind: 'request', id: 0x0031, seq: 2, body: { domain: 5, id: 0x9e3779b9 }, fds: [] },
  },
  {
    name: 'SHM_MAP reply',
    direction: 'reply',
    bytes: hex`
      31 00 28 00 02 00 00 00        # size 40, seq 2
      00 00 00 00 00 00 00 00        # err 0, pad
      b9 79 37 9e                    # id 0x9e3779b9
      05 00 00 00                    # owner_domain 5
      00 00 00 00                    # target_domain 0
      a4 1f 00 00                    # pages 8100
      00 00 40 00 00 00 00 00        # shm_offset 0x400000
      00 40 fa 01 00 00 00 00        # shm_length 8100 x 4096
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0031,
      seq: 2,
      err: 0,
      body: { id: 0x9e3779b9, ownerDomain: 5, targetDomain: 0, pages: 8100, shmOffset: 0x400000, shmLength: 0x1fa4000 },
      fds: [20],
    },
  },
  {
    name: 'SHM_MAP reply: -ENOENT',
    direction: 'reply',
    bytes: hex`
      31 00 08 00 02 00 00 00
      fe ff ff ff 00 00 00 00        # err -2
    `,
    value: { kind: 'reply', ok: false, id: 0x0031, seq: 2, err: -2, body: undefined, fds: [] },
  },
  {
    name: 'SHM_UNMAP request',
    direction: 'request',
    bytes: hex`
      32 00 08 00 04 00 00 00        # id 0x0032, size 8, seq 4
      05 00 00 00                    # domain 5 (owner)
      b9 79 37 9e                    # id 0x9e3779b9
    `,
    value: { kind: 'request', id: 0x0032, seq: 4, body: { domain: 5, id: 0x9e3779b9 }, fds: [] },
  },
  {
    name: 'SHM_UNMAP reply',
    direction: 'reply',
    bytes: hex`
      32 00 08 00 04 00 00 00
      00 00 00 00 00 00 00 00        # err 0, no data
    `,
    value: { kind: 'reply', ok: true, id: 0x0032, seq: 4, err: 0, body: {}, fds: [] },
  },
  {
    name: 'SHM_RELEASE request',
    direction: 'request',
    bytes: hex`
      33 00 08 00 05 00 00 00        # id 0x0033, size 8, seq 5
      b9 79 37 9e                    # id 0x9e3779b9
      00 00 00 00                    # pad
    `,
    value: { kind: 'request', id: 0x0033, seq: 5, body: { id: 0x9e3779b9 }, fds: [] },
  },
  {
    name: 'SHM_RELEASE reply',
    direction: 'reply',
    bytes: hex`
      33 00 08 00 05 00 00 00
      00 00 00 00 00 00 00 00        # err 0, no data
    `,
    value: { kind: 'reply', ok: true, id: 0x0033, seq: 5, err: 0, body: {}, fds: [] },
  },
  {
    name: 'LIST_REGIONS request',
    direction: 'request',
    bytes: hex`
      34 00 08 00 06 00 00 00        # id 0x0034, size 8, seq 6
      00 00 00 00 00 00 00 00        # start 0, pad
    `,
    value: { kind: 'request', id: 0x0034, seq: 6, body: { start: 0 }, fds: [] },
  },
  {
    name: 'LIST_REGIONS reply',
    direction: 'reply',
    bytes: hex`
      34 00 50 00 06 00 00 00        # size 80
      00 00 00 00 00 00 00 00        # err 0, pad
      02 00 00 00                    # count 2
      00 00 00 00                    # next 0
      2a 00 00 00                    # id 42
      00 00 00 00                    # owner_domain 0
      00 00 00 00                    # target_domain 0
      a4 1f 00 00                    # pages 8100
      00 00 00 00                    # flags: not released
      02 00 00 00                    # holds 2
      e8 03 00 00                    # creator_uid 1000
      39 30 00 00                    # creator_pid 12345
      b9 79 37 9e                    # id 0x9e3779b9
      05 00 00 00                    # owner_domain 5
      00 00 00 00                    # target_domain 0
      01 00 00 00                    # pages 1
      01 00 00 00                    # flags: RELEASED
      01 00 00 00                    # holds 1
      ff ff ff ff                    # creator_uid: none (a guest created it)
      00 00 00 00                    # creator_pid 0
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0034,
      seq: 6,
      err: 0,
      body: {
        next: 0,
        entries: [
          { id: 42, ownerDomain: 0, targetDomain: 0, pages: 8100, flags: 0, holds: 2, creatorUid: 1000, creatorPid: 12345 },
          { id: 0x9e3779b9, ownerDomain: 5, targetDomain: 0, pages: 1, flags: 1, holds: 1, creatorUid: 0xffffffff, creatorPid: 0 },
        ],
      },
      fds: [],
    },
  },

  // ---- §6.8 guest ↔ host control (stream transport: no fds ever)
  {
    name: 'GUEST_HELLO request',
    direction: 'request',
    bytes: hex`
      01 01 08 00 01 00 00 00        # id 0x0101, size 8, seq 1
      01 00 00 00                    # version 1
      00 00 00 00                    # pad32
    `,
    value: { kind: 'request', id: 0x0101, seq: 1, body: { version: 1 }, fds: [] },
  },
  {
    name: 'GUEST_HELLO reply',
    direction: 'reply',
    bytes: hex`
      01 01 30 00 01 00 00 00        # id 0x0101, size 48, seq 1
      00 00 00 00 00 00 00 00        # err 0, pad
      05 00 00 00                    # domain 5
      00 00 00 00                    # pad32
      73 79 73 2d 6e 65 74 00 00 00 00 00 00 00 00 00   # name "sys-net"
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    `,
    value: { kind: 'reply', ok: true, id: 0x0101, seq: 1, err: 0, body: { domain: 5, name: 'sys-net' }, fds: [] },
  },
  {
    name: 'GUEST_VCHAN_SERVER_INIT reply: -EPERM (sent before GUEST_HELLO)',
    direction: 'reply',
    bytes: hex`
      10 01 08 00 01 00 00 00
      ff ff ff ff 00 00 00 00        # err -1
    `,
    value: { kind: 'reply', ok: false, id: 0x0110, seq: 1, err: -1, body: undefined, fds: [] },
  },
  {
    name: 'GUEST_VCHAN_SERVER_INIT request',
    direction: 'request',
    bytes: hex`
      10 01 18 00 02 00 00 00        # id 0x0110, size 24, seq 2
      07 00 00 00                    # conn 7
      00 00 00 00                    # peer_domain 0 (the host)
      88 13 00 00                    # port 5000
      00 10 00 00                    # read_min 4096
      00 00 01 00                    # write_min 65536
      00 00 00 00                    # pad32
    `,
    value: {
      kind: 'request',
      id: 0x0110,
      seq: 2,
      body: { conn: 7, peerDomain: 0, port: 5000, readMin: 4096, writeMin: 65536 },
      fds: [],
    },
  },
  {
    name: 'GUEST_VCHAN_SERVER_INIT reply',
    direction: 'reply',
    bytes: hex`
      10 01 40 00 02 00 00 00        # size 64
      00 00 00 00 00 00 00 00        # err 0, pad
      09 00 00 00                    # handle 9
      00 0c 10 00                    # role server, read_order 12, write_order 16, pad8
      05 00 00 00                    # local_domain 5
      00 00 00 00                    # peer_domain 0
      88 13 00 00                    # port 5000
      02 00 00 00                    # pool 2
      03 00 00 00                    # vector 3
      00 00 00 00                    # peer_id 0 (the host)
      03 00 00 00                    # peer_vector 3
      00 00 00 00                    # pad
      00 00 02 00 00 00 00 00        # shm_offset 0x20000
      00 20 01 00 00 00 00 00        # shm_length 0x12000 = 4096 + 4096 + 65536
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0110,
      seq: 2,
      err: 0,
      body: {
        handle: 9,
        role: 0,
        readOrder: 12,
        writeOrder: 16,
        localDomain: 5,
        peerDomain: 0,
        port: 5000,
        pool: 2,
        vector: 3,
        peerId: 0,
        peerVector: 3,
        shmOffset: 0x20000,
        shmLength: 0x12000,
      },
      fds: [],
    },
  },
  {
    name: 'GUEST_VCHAN_CLIENT_INIT request',
    direction: 'request',
    bytes: hex`
      11 01 18 00 03 00 00 00        # id 0x0111, size 24, seq 3
      08 00 00 00                    # conn 8
      06 00 00 00                    # server_domain 6
      cd ab 00 00                    # port 0xabcd
      ff ff ff ff                    # timeout_ms: wait forever
      00 00 00 00                    # flags 0
      00 00 00 00                    # pad32
    `,
    value: {
      kind: 'request',
      id: 0x0111,
      seq: 3,
      body: { conn: 8, serverDomain: 6, port: 0xabcd, timeoutMs: 0xffffffff, flags: 0 },
      fds: [],
    },
  },
  {
    name: 'GUEST_VCHAN_CLIENT_INIT reply',
    direction: 'reply',
    bytes: hex`
      11 01 40 00 03 00 00 00        # size 64
      00 00 00 00 00 00 00 00        # err 0, pad
      0a 00 00 00                    # handle 10
      01 0a 0b 00                    # role client, read_order 10, write_order 11, pad8
      05 00 00 00                    # local_domain 5
      06 00 00 00                    # peer_domain 6
      cd ab 00 00                    # port 0xabcd
      04 00 00 00                    # pool 4
      11 00 00 00                    # vector 17
      02 00 00 00                    # peer_id 2 (domain 6 on that pool)
      11 00 00 00                    # peer_vector 17
      00 00 00 00                    # pad
      00 30 00 00 01 00 00 00        # shm_offset 0x1_0000_3000
      00 1c 00 00 00 00 00 00        # shm_length 7168 = 4096 + 1024 + 2048
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0111,
      seq: 3,
      err: 0,
      body: {
        handle: 10,
        role: 1,
        readOrder: 10,
        writeOrder: 11,
        localDomain: 5,
        peerDomain: 6,
        port: 0xabcd,
        pool: 4,
        vector: 17,
        peerId: 2,
        peerVector: 17,
        shmOffset: 0x1_0000_3000,
        shmLength: 7168,
      },
      fds: [],
    },
  },
  {
    name: 'GUEST_VCHAN_CLIENT_INIT reply: -ECANCELED (its conn was reported closed)',
    direction: 'reply',
    bytes: hex`
      11 01 08 00 0b 00 00 00
      83 ff ff ff 00 00 00 00        # err -125
    `,
    value: { kind: 'reply', ok: false, id: 0x0111, seq: 11, err: -125, body: undefined, fds: [] },
  },
  {
    name: 'GUEST_VCHAN_CLOSE request',
    direction: 'request',
    bytes: hex`
      12 01 08 00 04 00 00 00        # id 0x0112, size 8, seq 4
      07 00 00 00                    # conn 7
      09 00 00 00                    # handle 9
    `,
    value: { kind: 'request', id: 0x0112, seq: 4, body: { conn: 7, handle: 9 }, fds: [] },
  },
  {
    name: 'GUEST_VCHAN_CLOSE reply',
    direction: 'reply',
    bytes: hex`
      12 01 08 00 04 00 00 00
      00 00 00 00 00 00 00 00        # err 0, no data
    `,
    value: { kind: 'reply', ok: true, id: 0x0112, seq: 4, err: 0, body: {}, fds: [] },
  },
  {
    name: 'GUEST_CONN_CLOSED request',
    direction: 'request',
    bytes: hex`
      13 01 08 00 05 00 00 00        # id 0x0113, size 8, seq 5
      08 00 00 00                    # conn 8
      00 00 00 00                    # pad32
    `,
    value: { kind: 'request', id: 0x0113, seq: 5, body: { conn: 8 }, fds: [] },
  },
  {
    name: 'GUEST_CONN_CLOSED reply',
    direction: 'reply',
    bytes: hex`
      13 01 08 00 05 00 00 00
      00 00 00 00 00 00 00 00        # err 0, no data
    `,
    value: { kind: 'reply', ok: true, id: 0x0113, seq: 5, err: 0, body: {}, fds: [] },
  },

  // ---- §6.8 shared-memory regions on the guest link (docs/shmem.md §6)
  {
    name: 'GUEST_SHM_SHARE request',
    direction: 'request',
    bytes: hex`
      14 01 10 00 06 00 00 00        # id 0x0114, size 16, seq 6
      07 00 00 00                    # conn 7
      00 00 00 00                    # domain 0 (target: the host)
      a4 1f 00 00                    # pages 8100
      00 00 00 00                    # pad32
    `,
    value: { kind: 'request', id: 0x0114, seq: 6, body: { conn: 7, domain: 0, pages: 8100 }, fds: [] },
  },
  {
    name: 'GUEST_SHM_SHARE reply',
    direction: 'reply',
    bytes: hex`
      14 01 30 00 06 00 00 00        # size 48, seq 6
      00 00 00 00 00 00 00 00        # err 0, pad
      b9 79 37 9e                    # id 0x9e3779b9
      03 00 00 00                    # owner_domain 3
      00 00 00 00                    # target_domain 0
      a4 1f 00 00                    # pages 8100
      02 00 00 00                    # pool 2
      00 00 00 00                    # pad32
      00 00 40 00 00 00 00 00        # shm_offset 0x400000 (in the pool)
      00 40 fa 01 00 00 00 00        # shm_length 8100 x 4096
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0114,
      seq: 6,
      err: 0,
      body: { id: 0x9e3779b9, ownerDomain: 3, targetDomain: 0, pages: 8100, pool: 2, shmOffset: 0x400000, shmLength: 0x1fa4000 },
      fds: [],
    },
  },
  {
    name: 'GUEST_SHM_SHARE reply: -EMSGSIZE (larger than a pool)',
    direction: 'reply',
    bytes: hex`
      14 01 08 00 06 00 00 00
      a6 ff ff ff 00 00 00 00        # err -90
    `,
    value: { kind: 'reply', ok: false, id: 0x0114, seq: 6, err: -90, body: undefined, fds: [] },
  },
  {
    name: 'GUEST_SHM_MAP request',
    direction: 'request',
    bytes: hex`
      15 01 10 00 07 00 00 00        # id 0x0115, size 16, seq 7
      08 00 00 00                    # conn 8
      00 00 00 00                    # domain 0 (owner: the host)
      01 00 00 80                    # id 0x80000001
      00 00 00 00                    # pad32
    `,
    value: { kind: 'request', id: 0x0115, seq: 7, body: { conn: 8, domain: 0, id: 0x80000001 }, fds: [] },
  },
  {
    name: 'GUEST_SHM_MAP reply',
    direction: 'reply',
    bytes: hex`
      15 01 30 00 07 00 00 00        # size 48, seq 7
      00 00 00 00 00 00 00 00        # err 0, pad
      01 00 00 80                    # id 0x80000001
      00 00 00 00                    # owner_domain 0 (the host)
      03 00 00 00                    # target_domain 3
      10 00 00 00                    # pages 16
      05 00 00 00                    # pool 5
      00 00 00 00                    # pad32
      00 00 01 00 00 00 00 00        # shm_offset 0x10000
      00 00 01 00 00 00 00 00        # shm_length 16 x 4096
    `,
    value: {
      kind: 'reply',
      ok: true,
      id: 0x0115,
      seq: 7,
      err: 0,
      body: { id: 0x80000001, ownerDomain: 0, targetDomain: 3, pages: 16, pool: 5, shmOffset: 0x10000, shmLength: 0x10000 },
      fds: [],
    },
  },
  {
    name: 'GUEST_SHM_MAP reply: -ENOENT',
    direction: 'reply',
    bytes: hex`
      15 01 08 00 07 00 00 00
      fe ff ff ff 00 00 00 00        # err -2
    `,
    value: { kind: 'reply', ok: false, id: 0x0115, seq: 7, err: -2, body: undefined, fds: [] },
  },
  {
    name: 'GUEST_SHM_UNMAP request',
    direction: 'request',
    bytes: hex`
      16 01 10 00 08 00 00 00        # id 0x0116, size 16, seq 8
      08 00 00 00                    # conn 8
      00 00 00 00                    # domain 0 (owner)
      01 00 00 80                    # id 0x80000001
      00 00 00 00                    # pad32
    `,
    value: { kind: 'request', id: 0x0116, seq: 8, body: { conn: 8, domain: 0, id: 0x80000001 }, fds: [] },
  },
  {
    name: 'GUEST_SHM_UNMAP reply',
    direction: 'reply',
    bytes: hex`
      16 01 08 00 08 00 00 00
      00 00 00 00 00 00 00 00        # err 0, no data
    `,
    value: { kind: 'reply', ok: true, id: 0x0116, seq: 8, err: 0, body: {}, fds: [] },
  },
  {
    name: 'GUEST_SHM_RELEASE request',
    direction: 'request',
    bytes: hex`
      17 01 08 00 09 00 00 00        # id 0x0117, size 8, seq 9
      07 00 00 00                    # conn 7
      b9 79 37 9e                    # id 0x9e3779b9
    `,
    value: { kind: 'request', id: 0x0117, seq: 9, body: { conn: 7, id: 0x9e3779b9 }, fds: [] },
  },
  {
    name: 'GUEST_SHM_RELEASE reply',
    direction: 'reply',
    bytes: hex`
      17 01 08 00 09 00 00 00
      00 00 00 00 00 00 00 00        # err 0, no data
    `,
    value: { kind: 'reply', ok: true, id: 0x0117, seq: 9, err: 0, body: {}, fds: [] },
  },
  {
    name: 'GUEST_SHM_RELEASE reply: -EPERM (created on another conn)',
    direction: 'reply',
    bytes: hex`
      17 01 08 00 09 00 00 00
      ff ff ff ff 00 00 00 00        # err -1
    `,
    value: { kind: 'reply', ok: false, id: 0x0117, seq: 9, err: -1, body: undefined, fds: [] },
  },

  // ---- §4.2 an unknown id is answered -ENOSYS, repeating the id
  {
    name: 'reply to unknown id 0x7777: -ENOSYS',
    direction: 'reply',
    bytes: hex`
      77 77 08 00 ff ff ff ff
      da ff ff ff 00 00 00 00        # err -38
    `,
    value: { kind: 'reply', ok: false, id: 0x7777, seq: 0xffffffff, err: -38, body: undefined, fds: [] },
  },

  // ---- §7.1 EVENT_SHUTDOWN
  {
    name: 'EVENT_SHUTDOWN restart',
    direction: 'event',
    bytes: hex`
      01 80 08 00 00 00 00 00        # id 0x8001, size 8, seq 0
      01 00 00 00 00 00 00 00        # reason RESTART, pad
    `,
    value: { kind: 'event', id: 0x8001, seq: 0, body: { reason: 1 } },
  },
  {
    name: 'EVENT_SHUTDOWN stop',
    direction: 'event',
    bytes: hex`
      01 80 08 00 00 00 00 00
      00 00 00 00 00 00 00 00        # reason STOP
    `,
    value: { kind: 'event', id: 0x8001, seq: 0, body: { reason: 0 } },
  },

  // ---- §7.3 EVENT_PEER_CLOSED (seqpacket transport)
  {
    name: 'EVENT_PEER_CLOSED',
    direction: 'event',
    bytes: hex`
      02 80 08 00 00 00 00 00        # id 0x8002, size 8, seq 0
      2a 00 00 00 00 00 00 00        # handle 42, pad
    `,
    value: { kind: 'event', id: 0x8002, seq: 0, body: { handle: 42 } },
  },

  // ---- §7.2 EVENT_POOL_ADDED (stream transport)
  {
    name: 'EVENT_POOL_ADDED',
    direction: 'event',
    bytes: hex`
      01 81 58 00 00 00 00 00        # id 0x8101, size 88, seq 0
      02 00 00 00                    # pool 2
      01 00 00 00                    # peer_id 1
      40 00 00 00                    # vectors 64
      00 00 00 00                    # pad32
      00 00 00 01 00 00 00 00        # size 16 MiB
      70 6f 6f 6c 2d 32 2e 73 6f 63 6b 00 00 00 00 00   # socket "pool-2.sock"
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    `,
    value: { kind: 'event', id: 0x8101, seq: 0, body: { pool: 2, peerId: 1, vectors: 64, size: 16 * 2 ** 20, socket: 'pool-2.sock' } },
  },
  {
    name: 'EVENT_POOL_ADDED: 63-byte socket name, largest size',
    direction: 'event',
    bytes: hex`
      01 81 58 00 00 00 00 00
      07 00 00 00                    # pool 7
      02 00 00 00                    # peer_id 2
      00 04 00 00                    # vectors 1024
      00 00 00 00                    # pad32
      ff ff ff ff ff ff 1f 00        # size 2^53-1
      61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f 70   # "abcdefghijklmnop"
      71 72 73 74 75 76 77 78 79 7a 61 62 63 64 65 66   # "qrstuvwxyzabcdef"
      67 68 69 6a 6b 6c 6d 6e 6f 70 71 72 73 74 75 76   # "ghijklmnopqrstuv"
      77 78 79 7a 30 31 32 33 34 35 36 37 38 39 61 00   # "wxyz0123456789a", NUL
    `,
    value: {
      kind: 'event',
      id: 0x8101,
      seq: 0,
      body: {
        pool: 7,
        peerId: 2,
        vectors: 1024,
        size: 2 ** 53 - 1,
        socket: 'abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0123456789a',
      },
    },
  },
];

/** The unknown-id request of §10, which decodes to -ENOSYS rather than a value. */
export const UNKNOWN_REQUEST = hex`77 77 00 00 ff ff ff ff`;

/** fds that travel with a fixture (seqpacket). */
export function fixtureFds(f: Fixture): readonly number[] {
  return f.direction === 'event' ? [] : f.value.fds;
}
