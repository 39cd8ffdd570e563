/** ioctl: integer and buffer arguments, size checks, errors. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { native } from '../../src/native.js';
import { assertErrno, assertRangeError, assertTypeError, callRaw, checkLeaks } from './util.js';

const FIONREAD = 0x541b;
const TCGETS = 0x5401;
/** _IOR('T', 0x30, __u64): an encoded request that makes the kernel write 8 bytes. */
const IOR_T_30_U64 = (2 << 30) | (8 << 16) | (0x54 << 8) | 0x30;
/** _IO('T', 0x7f): encoded, without an argument. */
const IO_T_7F = (0x54 << 8) | 0x7f;

describe('ioctl', () => {
  checkLeaks();

  it('FIONREAD on a socket writes the pending byte count into the buffer', () => {
    const [a, b] = native.socketpair('seqpacket');
    try {
      native.sendmsg(a, Buffer.alloc(300), []);
      const out = new Int32Array(1);
      assert.equal(native.ioctl(b, FIONREAD, new Uint8Array(out.buffer)), 0);
      assert.equal(out[0], 300);
      // A short buffer gets the leading bytes and nothing is written past its end.
      const whole = Buffer.alloc(8, 0xee);
      native.ioctl(b, FIONREAD, whole.subarray(0, 2));
      assert.deepEqual([...whole], [300 & 0xff, 300 >> 8, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee]);
    } finally {
      native.close(a);
      native.close(b);
    }
  });

  it('reports kernel errors', () => {
    const fd = native.memfdCreate('ioctl', 4096, false);
    try {
      assertErrno(() => native.ioctl(fd, TCGETS, Buffer.alloc(64)), 'ENOTTY', 'ioctl');
      assertErrno(() => native.ioctl(fd, IO_T_7F, 0), 'ENOTTY', 'ioctl');
    } finally {
      native.close(fd);
    }
    assertErrno(() => native.ioctl(999999, FIONREAD, Buffer.alloc(4)), 'EBADF', 'ioctl');
  });

  it('refuses buffers smaller than an encoded request needs, and numbers for pointer requests', () => {
    const fd = native.memfdCreate('ioctl-args', 4096, false);
    try {
      assertRangeError(() => native.ioctl(fd, IOR_T_30_U64, Buffer.alloc(4)));
      assertTypeError(() => native.ioctl(fd, IOR_T_30_U64, 0));
      // Big enough: reaches the kernel, which does not know the request.
      assertErrno(() => native.ioctl(fd, IOR_T_30_U64, Buffer.alloc(8)), 'ENOTTY', 'ioctl');
    } finally {
      native.close(fd);
    }
  });

  it('validates its arguments', () => {
    assertRangeError(() => native.ioctl(0, 2 ** 32, 0));
    assertRangeError(() => native.ioctl(0, 1.5, 0));
    assertRangeError(() => native.ioctl(0, IO_T_7F, 2 ** 53));
    assertTypeError(() => callRaw('ioctl', 0, '1', 0));
    assertTypeError(() => callRaw('ioctl', 0, IO_T_7F, '0'));
    assertTypeError(() => callRaw('ioctl', 0, IO_T_7F, null));
  });
});
