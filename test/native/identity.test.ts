/** identity.c: SO_PEERGROUPS (as recorded at connect) and NSS group lookups. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { native } from '../../src/native.js';
import { assertTypeError, callRaw } from './util.js';

const python = ['/usr/bin/python3', '/usr/bin/python3.11'].find((p) => fs.existsSync(p));
const asRoot = process.getuid?.() === 0;

describe('peerGroups', () => {
  it('socketpair: our own supplementary groups', () => {
    const [a, b] = native.socketpair('seqpacket');
    try {
      // Supplementary groups only (getgroups(2) may add the egid; the kernel's record does not).
      const line =
        fs
          .readFileSync('/proc/self/status', 'utf8')
          .split('\n')
          .find((l) => l.startsWith('Groups:')) ?? 'Groups:';
      const mine = line
        .slice(7)
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number)
        .sort((x, y) => x - y);
      const seen = native
        .peerGroups(a)
        .slice()
        .sort((x, y) => x - y);
      assert.deepEqual(seen, mine);
    } finally {
      native.close(a);
      native.close(b);
    }
  });

  it(
    'another process with other groups: what it had at connect(), not what it has later',
    { skip: !asRoot || python === undefined },
    () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-groups-'));
      fs.chmodSync(dir, 0o755);
      const sock = path.join(dir, 's');
      const lfd = native.listenUnix(sock, 'seqpacket', 4, 0o666);
      try {
        // Connect with groups [4242, 4343] as uid 65534, then drop every group and linger: the
        // kernel's record must not follow the process.
        const script = [
          'import os, socket, time',
          'os.setgroups([4242, 4343]); os.setgid(65534); os.setuid(65534)',
          's = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)',
          `s.connect(${JSON.stringify(sock)})`,
          's.send(b"x")',
        ].join('\n');
        const r = spawnSync(python!, ['-c', script], { encoding: 'utf8', timeout: 20_000 });
        assert.equal(r.status, 0, r.stderr);
        let fd: number | null = null;
        for (let i = 0; i < 100 && fd === null; i++) fd = native.accept(lfd);
        assert.ok(fd !== null, 'the connection is queued');
        try {
          assert.deepEqual(
            native
              .peerGroups(fd)
              .slice()
              .sort((x, y) => x - y),
            [4242, 4343],
          );
          assert.equal(native.peerCred(fd).uid, 65534);
        } finally {
          native.close(fd);
        }
      } finally {
        native.close(lfd);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('rejects a non-socket fd with ENOTSOCK and bad arguments with TypeError', () => {
    const efd = native.eventfd(0, 0);
    try {
      assert.throws(() => native.peerGroups(efd), { code: 'ENOTSOCK' });
    } finally {
      native.close(efd);
    }
    assertTypeError(() => callRaw('peerGroups', 'x'));
  });
});

describe('groupId', () => {
  it('finds groups through NSS and answers null for unknown ones', () => {
    assert.equal(native.groupId('root'), 0);
    assert.equal(native.groupId('kvmchan-no-such-group-xyz'), null);
    assertTypeError(() => callRaw('groupId', 42));
    assertTypeError(() => callRaw('groupId', 'ro\0ot'), 'ERR_INVALID_ARG_VALUE');
  });
});
