/** close / dup / setNonblocking / fdSize, argument validation and the error shape. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { native } from '../../src/native.js';
import { assertErrno, assertRangeError, assertTypeError, callRaw, checkLeaks, fdFlags, isOpen, O_CLOEXEC, O_NONBLOCK } from './util.js';

/** An fd number that is certainly not open. */
function closedFd(): number {
  const fd = native.eventfd(0, 0);
  native.close(fd);
  return fd;
}

describe('fd utilities', () => {
  checkLeaks();

  it('close releases the descriptor', () => {
    const fd = native.eventfd(0, 0);
    assert.ok(isOpen(fd));
    native.close(fd);
    assert.ok(!isOpen(fd));
  });

  it('close of a closed fd throws EBADF with code, errno and syscall', () => {
    const fd = closedFd();
    assertErrno(() => native.close(fd), 'EBADF', 'close');
    try {
      native.close(fd);
      assert.fail('close did not throw');
    } catch (err) {
      assert.ok(err instanceof Error);
      assert.equal(Object.getPrototypeOf(err), Error.prototype);
      assert.equal(err.message, 'EBADF: Bad file descriptor, close');
    }
  });

  it('dup returns a distinct close-on-exec descriptor of the same file', () => {
    const fd = native.memfdCreate('dup-test', 100, false);
    const copy = native.dup(fd);
    try {
      assert.notEqual(copy, fd);
      assert.ok((fdFlags(copy) & O_CLOEXEC) !== 0, 'dup must be close-on-exec');
      native.pwrite(copy, Buffer.from('abc'), 0);
      const out = Buffer.alloc(3);
      assert.equal(native.pread(fd, out, 0), 3);
      assert.equal(out.toString(), 'abc');
    } finally {
      native.close(copy);
      native.close(fd);
    }
  });

  it('dup of a bad fd throws EBADF', () => {
    assertErrno(() => native.dup(closedFd()), 'EBADF', 'dup');
  });

  it('setNonblocking toggles O_NONBLOCK', () => {
    const fd = native.eventfd(0, 0);
    try {
      assert.equal(fdFlags(fd) & O_NONBLOCK, 0);
      native.setNonblocking(fd, true);
      assert.notEqual(fdFlags(fd) & O_NONBLOCK, 0);
      native.setNonblocking(fd, true);
      assert.notEqual(fdFlags(fd) & O_NONBLOCK, 0);
      native.setNonblocking(fd, false);
      assert.equal(fdFlags(fd) & O_NONBLOCK, 0);
    } finally {
      native.close(fd);
    }
    assertErrno(() => native.setNonblocking(closedFd(), true), 'EBADF', 'fcntl');
    assertTypeError(() => callRaw('setNonblocking', 0, 1));
  });

  it('fdSize reports st_size', () => {
    const fd = native.memfdCreate('size', 12345, false);
    try {
      assert.equal(native.fdSize(fd), 12345);
      fs.ftruncateSync(fd, 7);
      assert.equal(native.fdSize(fd), 7);
    } finally {
      native.close(fd);
    }
    assertErrno(() => native.fdSize(closedFd()), 'EBADF', 'fstat');
  });

  it('rejects fds that are not non-negative int32 numbers', () => {
    assertTypeError(() => callRaw('close'));
    assertTypeError(() => callRaw('close', '3'));
    assertTypeError(() => callRaw('close', 3n));
    assertTypeError(() => callRaw('close', null));
    assertTypeError(() => callRaw('dup', {}));
    assertRangeError(() => native.close(-1));
    assertRangeError(() => native.close(1.5));
    assertRangeError(() => native.close(2 ** 31));
    assertRangeError(() => native.close(NaN));
    assertRangeError(() => native.close(Infinity));
    assertRangeError(() => native.fdSize(-0.5));
  });

  it('a RangeError message names the argument and the bounds', () => {
    assert.throws(() => native.dup(-7), {
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
      message: 'The value of "fd" is out of range. It must be an integer >= 0 && <= 2147483647. Received -7',
    });
  });
});
