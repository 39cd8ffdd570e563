/** eventfd / eventfdRead / eventfdWrite. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EFD_NONBLOCK, EFD_SEMAPHORE, native } from '../../src/native.js';
import { assertErrno, assertRangeError, assertTypeError, callRaw, checkLeaks, fdFlags, O_CLOEXEC, O_NONBLOCK } from './util.js';

describe('eventfd', () => {
  checkLeaks();

  it('is close-on-exec, and non-blocking with EFD_NONBLOCK', () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    try {
      assert.notEqual(fdFlags(fd) & O_CLOEXEC, 0);
      assert.notEqual(fdFlags(fd) & O_NONBLOCK, 0);
    } finally {
      native.close(fd);
    }
  });

  it('read returns the summed counter and resets it; null when it would block', () => {
    const fd = native.eventfd(5, EFD_NONBLOCK);
    try {
      assert.equal(native.eventfdRead(fd), 5);
      assert.equal(native.eventfdRead(fd), null);
      native.eventfdWrite(fd, 1);
      native.eventfdWrite(fd, 2);
      native.eventfdWrite(fd, 2 ** 40);
      assert.equal(native.eventfdRead(fd), 3 + 2 ** 40);
      assert.equal(native.eventfdRead(fd), null);
    } finally {
      native.close(fd);
    }
  });

  it('semaphore mode hands out one unit per read', () => {
    const fd = native.eventfd(2, EFD_NONBLOCK | EFD_SEMAPHORE);
    try {
      assert.equal(native.eventfdRead(fd), 1);
      assert.equal(native.eventfdRead(fd), 1);
      assert.equal(native.eventfdRead(fd), null);
    } finally {
      native.close(fd);
    }
  });

  it('write ignores EAGAIN when the counter is saturated', () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    try {
      // The counter holds at most 2^64 - 2: 2100 × (2^53 - 1) exceeds it.
      for (let i = 0; i < 2100; i++) native.eventfdWrite(fd, Number.MAX_SAFE_INTEGER);
      const value = native.eventfdRead(fd);
      assert.ok(value !== null && value > 2 ** 63, `counter ${String(value)}`);
    } finally {
      native.close(fd);
    }
  });

  it('reports other errors', () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    native.close(fd);
    assertErrno(() => native.eventfdRead(fd), 'EBADF', 'read');
    assertErrno(() => native.eventfdWrite(fd, 1), 'EBADF', 'write');
    // A write of 8 bytes to something that is not an eventfd and not writable.
    const [a, b] = native.socketpair('seqpacket');
    native.shutdown(a);
    try {
      assertErrno(() => native.eventfdWrite(a, 1), 'EPIPE', 'write');
    } finally {
      native.close(a);
      native.close(b);
    }
  });

  it('validates its arguments', () => {
    assertRangeError(() => native.eventfd(-1, 0));
    assertRangeError(() => native.eventfd(2 ** 32, 0));
    assertRangeError(() => native.eventfd(0, 0x40));
    assertTypeError(() => callRaw('eventfd', '0', 0));
    assertTypeError(() => callRaw('eventfdWrite', 0, 1n));
    assertRangeError(() => native.eventfdWrite(0, -1));
    assertRangeError(() => native.eventfdWrite(0, 2 ** 53));
    assertRangeError(() => native.eventfdRead(-3));
  });
});
