/** AF_UNIX sockets: socketpair, listen/accept/connect, sendmsg/recvmsg with fds, peerCred. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EFD_NONBLOCK, native, type RecvResult } from '../../src/native.js';
import {
  assertErrno,
  assertRangeError,
  assertTypeError,
  callRaw,
  checkLeaks,
  fdFlags,
  isOpen,
  O_CLOEXEC,
  O_NONBLOCK,
  tempDir,
} from './util.js';

function pair(type: 'stream' | 'seqpacket'): [number, number, () => void] {
  const [a, b] = native.socketpair(type);
  return [
    a,
    b,
    () => {
      native.close(a);
      native.close(b);
    },
  ];
}

function recv(fd: number, maxLen = 4096, maxFds = 16): RecvResult {
  const r = native.recvmsg(fd, maxLen, maxFds);
  assert.ok(r !== null, 'expected a message');
  return r;
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) native.close(fd);
}

describe('socketpair / sendmsg / recvmsg', () => {
  checkLeaks();

  it('socketpair makes non-blocking, close-on-exec sockets of both types', () => {
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b, done] = pair(type);
      try {
        for (const fd of [a, b]) {
          assert.notEqual(fdFlags(fd) & O_NONBLOCK, 0);
          assert.notEqual(fdFlags(fd) & O_CLOEXEC, 0);
        }
      } finally {
        done();
      }
    }
    assertTypeError(() => callRaw('socketpair', 'raw'), 'ERR_INVALID_ARG_VALUE');
    assertTypeError(() => callRaw('socketpair', 'stream\0'), 'ERR_INVALID_ARG_VALUE');
    assertTypeError(() => callRaw('socketpair', 1));
  });

  it('round-trips bytes; recvmsg returns null when nothing is pending', () => {
    const [a, b, done] = pair('seqpacket');
    try {
      assert.equal(native.recvmsg(b, 100, 0), null);
      assert.equal(native.sendmsg(a, Buffer.from('hello'), []), 5);
      assert.equal(native.sendmsg(a, new Uint8Array([1, 2, 3]), []), 3);
      const m1 = recv(b);
      assert.ok(Buffer.isBuffer(m1.data));
      assert.equal(m1.data.toString(), 'hello');
      assert.deepEqual(m1.fds, []);
      assert.equal(m1.truncated, false);
      assert.equal(m1.fdsTruncated, false);
      assert.equal(m1.eof, false);
      assert.deepEqual([...recv(b).data], [1, 2, 3]);
      assert.equal(native.recvmsg(b, 100, 0), null);
    } finally {
      done();
    }
  });

  it('passes an eventfd that works in the receiver', () => {
    const [a, b, done] = pair('seqpacket');
    const efd = native.eventfd(0, EFD_NONBLOCK);
    try {
      native.sendmsg(a, Buffer.from('efd'), [efd]);
      const m = recv(b);
      assert.equal(m.fds.length, 1);
      const got = m.fds[0]!;
      assert.notEqual(got, efd);
      assert.notEqual(fdFlags(got) & O_CLOEXEC, 0, 'received fds must be close-on-exec');
      native.eventfdWrite(got, 7);
      assert.equal(native.eventfdRead(efd), 7);
      native.close(got);
    } finally {
      native.close(efd);
      done();
    }
  });

  it('passes several memfds whose memory is shared with the sender', () => {
    const [a, b, done] = pair('stream');
    const m1 = native.memfdCreate('pass1', 4096, true);
    const m2 = native.memfdCreate('pass2', 4096, true);
    try {
      native.sendmsg(a, Buffer.from('x'), [m1, m2, m1]);
      const m = recv(b);
      assert.equal(m.fds.length, 3);
      const [r1, r2, r3] = m.fds as [number, number, number];
      const ab = native.mmap(r2, 4096, 0, true);
      new Uint8Array(ab)[0] = 0xab;
      const out = Buffer.alloc(1);
      native.pread(m2, out, 0);
      assert.equal(out[0], 0xab);
      native.munmap(ab);
      native.pwrite(r3, Buffer.from([0xcd]), 1);
      native.pread(m1, out, 1);
      assert.equal(out[0], 0xcd);
      assert.equal(native.fdSize(r1), 4096);
      closeAll(m.fds);
    } finally {
      native.close(m1);
      native.close(m2);
      done();
    }
  });

  it('reports a truncated datagram and discards its rest (seqpacket)', () => {
    const [a, b, done] = pair('seqpacket');
    const efd = native.eventfd(0, 0);
    try {
      native.sendmsg(a, Buffer.from('0123456789'), [efd]);
      native.sendmsg(a, Buffer.from('next'), []);
      const m = recv(b, 4);
      assert.equal(m.data.toString(), '0123');
      assert.equal(m.truncated, true);
      // The fds of a truncated message are still handed over, for the caller to close.
      assert.equal(m.fds.length, 1);
      closeAll(m.fds);
      const n = recv(b, 4);
      assert.equal(n.data.toString(), 'next');
      assert.equal(n.truncated, false);
    } finally {
      native.close(efd);
      done();
    }
  });

  it('reports fds beyond maxFds as truncated and leaks none of them', () => {
    const [a, b, done] = pair('seqpacket');
    const efds = [0, 1, 2, 3, 4].map(() => native.eventfd(0, 0));
    try {
      for (const maxFds of [0, 1, 2, 4]) {
        const before = fs.readdirSync('/proc/self/fd').length;
        native.sendmsg(a, Buffer.from('fds'), efds);
        const m = recv(b, 100, maxFds);
        assert.equal(m.data.toString(), 'fds');
        assert.equal(m.fds.length, maxFds, `maxFds ${maxFds}`);
        assert.equal(m.fdsTruncated, true);
        assert.equal(m.truncated, false);
        assert.equal(fs.readdirSync('/proc/self/fd').length, before + maxFds);
        closeAll(m.fds);
      }
      native.sendmsg(a, Buffer.from('fds'), efds);
      const all = recv(b, 100, efds.length);
      assert.equal(all.fds.length, efds.length);
      assert.equal(all.fdsTruncated, false);
      closeAll(all.fds);
    } finally {
      closeAll(efds);
      done();
    }
  });

  it('sends up to 253 fds and refuses more', () => {
    const [a, b, done] = pair('seqpacket');
    const efd = native.eventfd(0, 0);
    try {
      const many = new Array<number>(253).fill(efd);
      native.sendmsg(a, Buffer.from('m'), many);
      const m = recv(b, 10, 253);
      assert.equal(m.fds.length, 253);
      assert.equal(m.fdsTruncated, false);
      closeAll(m.fds);
      assertRangeError(() => native.sendmsg(a, Buffer.from('m'), new Array<number>(254).fill(efd)));
      assertRangeError(() => native.recvmsg(b, 10, 254));
    } finally {
      native.close(efd);
      done();
    }
  });

  it('reports eof when the peer closes or shuts down', () => {
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b, done] = pair(type);
      try {
        native.sendmsg(a, Buffer.from('last'), []);
        native.shutdown(a);
        assert.equal(recv(b).data.toString(), 'last');
        const end = recv(b);
        assert.equal(end.eof, true, type);
        assert.equal(end.data.length, 0);
        assert.equal(recv(b).eof, true, 'eof is sticky');
      } finally {
        done();
      }
      const [c, d] = native.socketpair(type);
      native.close(c);
      assert.equal(recv(d).eof, true);
      native.close(d);
    }
  });

  it('sendmsg throws EAGAIN when the socket buffer is full, and EPIPE after the peer closed', () => {
    const [a, , done] = pair('stream');
    try {
      const chunk = Buffer.alloc(65536);
      let sent = 0;
      assert.throws(
        () => {
          for (;;) sent += native.sendmsg(a, chunk, []);
        },
        { code: 'EAGAIN', syscall: 'sendmsg' },
      );
      assert.ok(sent > 0);
    } finally {
      done();
    }
    const [c, d] = native.socketpair('seqpacket');
    native.close(d);
    try {
      // MSG_NOSIGNAL: an error, not a SIGPIPE that would kill the process.
      assertErrno(() => native.sendmsg(c, Buffer.from('x'), []), 'EPIPE', 'sendmsg');
    } finally {
      native.close(c);
    }
  });

  it('sendmsg reports a bad fd in the list, and on the socket itself', () => {
    const [a, b, done] = pair('seqpacket');
    const gone = native.eventfd(0, 0);
    native.close(gone);
    try {
      assertErrno(() => native.sendmsg(a, Buffer.from('x'), [gone]), 'EBADF', 'sendmsg');
      assert.equal(native.recvmsg(b, 10, 1), null, 'nothing was sent');
      assertErrno(() => native.sendmsg(gone, Buffer.from('x'), []), 'EBADF', 'sendmsg');
      assertErrno(() => native.recvmsg(gone, 10, 0), 'EBADF', 'recvmsg');
      const efd = native.eventfd(0, 0);
      try {
        assertErrno(() => native.sendmsg(efd, Buffer.from('x'), []), 'ENOTSOCK', 'sendmsg');
      } finally {
        native.close(efd);
      }
    } finally {
      done();
    }
  });

  it('validates sendmsg and recvmsg arguments', () => {
    const [a, b, done] = pair('seqpacket');
    try {
      assertTypeError(() => callRaw('sendmsg', a, 'text', []));
      assertTypeError(() => callRaw('sendmsg', a, Buffer.from('x'), 3));
      assertTypeError(() => callRaw('sendmsg', a, Buffer.from('x'), ['3']));
      assertRangeError(() => native.sendmsg(a, Buffer.from('x'), [-1]));
      assertRangeError(() => native.recvmsg(b, 0, 0));
      assertRangeError(() => native.recvmsg(b, 2 ** 31, 0));
      assertRangeError(() => native.recvmsg(b, 10, -1));
      assertTypeError(() => callRaw('recvmsg', b, '10', 0));
      assert.equal(native.recvmsg(b, 10, 0), null, 'no partial send happened');
    } finally {
      done();
    }
  });

  it('ioctl FIONREAD counts the pending bytes', () => {
    const FIONREAD = 0x541b;
    const [a, b, done] = pair('stream');
    try {
      const count = Buffer.alloc(4);
      assert.equal(native.ioctl(b, FIONREAD, count), 0);
      assert.equal(count.readInt32LE(0), 0);
      native.sendmsg(a, Buffer.from('twelve bytes'), []);
      native.ioctl(b, FIONREAD, count);
      assert.equal(count.readInt32LE(0), 12);
    } finally {
      done();
    }
  });

  it('peerCred reports our own pid, uid and gid', () => {
    const [a, b, done] = pair('stream');
    try {
      assert.deepEqual(native.peerCred(a), {
        pid: process.pid,
        uid: process.getuid!(),
        gid: process.getgid!(),
      });
      assert.equal(native.peerCred(b).pid, process.pid);
    } finally {
      done();
    }
    const efd = native.eventfd(0, 0);
    try {
      assertErrno(() => native.peerCred(efd), 'ENOTSOCK', 'getsockopt');
    } finally {
      native.close(efd);
    }
  });
});

describe('listenUnix / accept / connectUnix', () => {
  checkLeaks();
  let dir = '';
  let cleanup = (): void => undefined;
  before(() => {
    ({ dir, cleanup } = tempDir());
  });
  after(() => {
    cleanup();
  });

  it('accepts a connection, with peer credentials and the mode applied to the path', () => {
    for (const type of ['stream', 'seqpacket'] as const) {
      const p = path.join(dir, `ctl-${type}.sock`);
      const server = native.listenUnix(p, type, 8, 0o600);
      try {
        assert.equal(fs.statSync(p).mode & 0o7777, 0o600);
        assert.ok(fs.statSync(p).isSocket());
        assert.notEqual(fdFlags(server) & O_NONBLOCK, 0);
        assert.notEqual(fdFlags(server) & O_CLOEXEC, 0);
        assert.equal(native.accept(server), null, 'nothing pending');
        const client = native.connectUnix(p, type);
        const conn = native.accept(server);
        assert.ok(conn !== null);
        try {
          assert.notEqual(fdFlags(client) & O_NONBLOCK, 0, 'non-blocking after connect');
          assert.notEqual(fdFlags(client) & O_CLOEXEC, 0);
          assert.notEqual(fdFlags(conn) & O_NONBLOCK, 0);
          assert.notEqual(fdFlags(conn) & O_CLOEXEC, 0);
          assert.equal(native.peerCred(conn).pid, process.pid);
          assert.equal(native.peerCred(conn).uid, process.getuid!());
          assert.equal(native.peerCred(client).pid, process.pid);
          native.sendmsg(client, Buffer.from('ping'), []);
          assert.equal(recv(conn).data.toString(), 'ping');
          native.sendmsg(conn, Buffer.from('pong'), []);
          assert.equal(recv(client).data.toString(), 'pong');
          assert.equal(native.accept(server), null);
        } finally {
          native.close(client);
          native.close(conn);
        }
      } finally {
        native.close(server);
        fs.unlinkSync(p);
      }
    }
  });

  it('applies other modes', () => {
    const p = path.join(dir, 'mode.sock');
    const server = native.listenUnix(p, 'seqpacket', 1, 0o660);
    assert.equal(fs.statSync(p).mode & 0o7777, 0o660);
    native.close(server);
    fs.unlinkSync(p);
  });

  it('refuses an existing path with EADDRINUSE', () => {
    const p = path.join(dir, 'busy.sock');
    const server = native.listenUnix(p, 'stream', 1, 0o600);
    try {
      assertErrno(() => native.listenUnix(p, 'stream', 1, 0o600), 'EADDRINUSE', 'bind');
      assert.ok(fs.existsSync(p), 'the first listener path must survive');
      const file = path.join(dir, 'plain-file');
      fs.writeFileSync(file, '');
      assertErrno(() => native.listenUnix(file, 'stream', 1, 0o600), 'EADDRINUSE', 'bind');
      assert.equal(fs.readFileSync(file, 'utf8'), '');
    } finally {
      native.close(server);
      fs.unlinkSync(p);
    }
  });

  it('errors carry the path', () => {
    const p = path.join(dir, 'missing', 'x.sock');
    assert.throws(() => native.listenUnix(p, 'stream', 1, 0o600), {
      code: 'ENOENT',
      syscall: 'bind',
      path: p,
    });
  });

  it('connect fails with ENOENT, ECONNREFUSED and EPROTOTYPE', () => {
    assertErrno(() => native.connectUnix(path.join(dir, 'nobody.sock'), 'stream'), 'ENOENT', 'connect');
    const stale = path.join(dir, 'stale.sock');
    native.close(native.listenUnix(stale, 'stream', 1, 0o600));
    assertErrno(() => native.connectUnix(stale, 'stream'), 'ECONNREFUSED', 'connect');
    fs.unlinkSync(stale);
    const p = path.join(dir, 'typed.sock');
    const server = native.listenUnix(p, 'seqpacket', 1, 0o600);
    try {
      assertErrno(() => native.connectUnix(p, 'stream'), 'EPROTOTYPE', 'connect');
    } finally {
      native.close(server);
      fs.unlinkSync(p);
    }
  });

  it('rejects paths longer than sun_path with ENAMETOOLONG', () => {
    const long = path.join(dir, 'x'.repeat(120));
    assertErrno(() => native.listenUnix(long, 'stream', 1, 0o600), 'ENAMETOOLONG', 'bind');
    assertErrno(() => native.connectUnix(long, 'stream'), 'ENAMETOOLONG', 'connect');
    assert.ok(!fs.existsSync(long));
    // 107 bytes plus the NUL fill sun_path exactly and work.
    const fits = path.join(dir, 'y'.repeat(107 - dir.length - 1));
    assert.equal(Buffer.byteLength(fits), 107);
    const server = native.listenUnix(fits, 'stream', 1, 0o600);
    const client = native.connectUnix(fits, 'stream');
    native.close(client);
    native.close(server);
    fs.unlinkSync(fits);
  });

  it('validates its arguments', () => {
    const p = path.join(dir, 'args.sock');
    assertTypeError(() => native.listenUnix('', 'stream', 1, 0o600), 'ERR_INVALID_ARG_VALUE');
    assertTypeError(() => native.listenUnix(`${p}\0x`, 'stream', 1, 0o600), 'ERR_INVALID_ARG_VALUE');
    assertTypeError(() => callRaw('listenUnix', p, 'raw', 1, 0o600), 'ERR_INVALID_ARG_VALUE');
    assertRangeError(() => native.listenUnix(p, 'stream', -1, 0o600));
    assertRangeError(() => native.listenUnix(p, 'stream', 1, 0o10000));
    assertTypeError(() => callRaw('connectUnix', 5, 'stream'));
    assertTypeError(() => native.connectUnix('', 'stream'), 'ERR_INVALID_ARG_VALUE');
    assert.ok(!fs.existsSync(p), 'no socket file was left by a rejected call');
  });

  it('accept and shutdown report errors', () => {
    const [a, , done] = pair('stream');
    try {
      assertErrno(() => native.accept(a), 'EINVAL', 'accept');
    } finally {
      done();
    }
    const efd = native.eventfd(0, 0);
    try {
      assertErrno(() => native.accept(efd), 'ENOTSOCK', 'accept');
      assertErrno(() => native.shutdown(efd), 'ENOTSOCK', 'shutdown');
    } finally {
      native.close(efd);
    }
    assert.ok(!isOpen(efd));
  });
});
