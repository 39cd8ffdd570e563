/** memfdCreate (with seals), mmap/munmap/mappingCount and positioned I/O on memfds. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { native } from '../../src/native.js';
import {
  assertErrno,
  assertRangeError,
  assertTypeError,
  callRaw,
  checkLeaks,
  collectGarbage,
  fdFlags,
  O_CLOEXEC,
  runChild,
} from './util.js';

const PAGE = 4096;

describe('memfdCreate', () => {
  checkLeaks();

  it('creates a close-on-exec memfd of the requested size, zero filled', () => {
    const fd = native.memfdCreate('kvmchan-test', 3 * PAGE, false);
    try {
      assert.equal(native.fdSize(fd), 3 * PAGE);
      assert.notEqual(fdFlags(fd) & O_CLOEXEC, 0);
      assert.match(fs.readlinkSync(`/proc/self/fd/${fd}`), /^\/memfd:kvmchan-test/);
      const buf = Buffer.alloc(16, 0xff);
      assert.equal(native.pread(fd, buf, PAGE), 16);
      assert.deepEqual(buf, Buffer.alloc(16));
    } finally {
      native.close(fd);
    }
  });

  it('sealed: the size can never change (ftruncate fails with EPERM)', () => {
    const fd = native.memfdCreate('sealed', 2 * PAGE, true);
    try {
      assert.throws(() => fs.ftruncateSync(fd, PAGE), { code: 'EPERM' });
      assert.throws(() => fs.ftruncateSync(fd, 4 * PAGE), { code: 'EPERM' });
      assert.equal(native.fdSize(fd), 2 * PAGE);
      // Writing within the size is still allowed.
      assert.equal(native.pwrite(fd, Buffer.from('x'), 5), 1);
    } finally {
      native.close(fd);
    }
  });

  it('unsealed: the size can change', () => {
    const fd = native.memfdCreate('unsealed', 2 * PAGE, false);
    try {
      fs.ftruncateSync(fd, PAGE);
      assert.equal(native.fdSize(fd), PAGE);
    } finally {
      native.close(fd);
    }
  });

  it('validates its arguments', () => {
    assertTypeError(() => callRaw('memfdCreate', 1, PAGE, false));
    assertTypeError(() => callRaw('memfdCreate', 'a', '4096', false));
    assertTypeError(() => callRaw('memfdCreate', 'a', PAGE, 1));
    assertTypeError(() => native.memfdCreate('a\0b', PAGE, false), 'ERR_INVALID_ARG_VALUE');
    assertRangeError(() => native.memfdCreate('a', -1, false));
    assertRangeError(() => native.memfdCreate('a', 1.5, false));
    assertRangeError(() => native.memfdCreate('a', 2 ** 53, false));
    assertRangeError(() => native.memfdCreate('n'.repeat(250), PAGE, false));
    // 249 bytes is the kernel's limit and still accepted.
    native.close(native.memfdCreate('n'.repeat(249), PAGE, false));
  });
});

describe('mmap / munmap', () => {
  checkLeaks();

  it('returns a non-shared ArrayBuffer over the file, visible to pread/pwrite', () => {
    const fd = native.memfdCreate('map', 2 * PAGE, true);
    const before = native.mappingCount();
    const ab = native.mmap(fd, 2 * PAGE, 0, true);
    try {
      assert.ok(ab instanceof ArrayBuffer);
      assert.ok(!((ab as unknown) instanceof SharedArrayBuffer));
      assert.equal(ab.byteLength, 2 * PAGE);
      assert.equal(native.mappingCount(), before + 1);
      const bytes = new Uint8Array(ab);
      bytes.set([1, 2, 3], PAGE);
      const out = Buffer.alloc(3);
      native.pread(fd, out, PAGE);
      assert.deepEqual([...out], [1, 2, 3]);
      native.pwrite(fd, Buffer.from([9]), 10);
      assert.equal(bytes[10], 9);
    } finally {
      native.munmap(ab);
      native.close(fd);
    }
    assert.equal(native.mappingCount(), before);
  });

  it('two mappings of one memfd share memory, including Atomics', () => {
    const fd = native.memfdCreate('shared', PAGE, true);
    const a = native.mmap(fd, PAGE, 0, true);
    const b = native.mmap(fd, PAGE, 0, true);
    try {
      const ia = new Int32Array(a);
      const ib = new Int32Array(b);
      ia[3] = 1234;
      assert.equal(ib[3], 1234);
      Atomics.add(ib, 3, 6);
      assert.equal(Atomics.load(ia, 3), 1240);
      assert.equal(native.mappingCount() >= 2, true);
    } finally {
      native.munmap(a);
      native.munmap(b);
      native.close(fd);
    }
  });

  it('closing the fd keeps the mapping valid', () => {
    const fd = native.memfdCreate('keep', PAGE, true);
    const a = native.mmap(fd, PAGE, 0, true);
    native.close(fd);
    const view = new Uint8Array(a);
    view[0] = 77;
    assert.equal(view[0], 77);
    native.munmap(a);
  });

  it('maps at a page-aligned offset', () => {
    const fd = native.memfdCreate('offset', 3 * PAGE, true);
    native.pwrite(fd, Buffer.from('page2'), 2 * PAGE);
    const ab = native.mmap(fd, PAGE, 2 * PAGE, false);
    try {
      assert.equal(Buffer.from(ab, 0, 5).toString(), 'page2');
    } finally {
      native.munmap(ab);
      native.close(fd);
    }
  });

  it('a read-only mapping sees writes made through the file', () => {
    const fd = native.memfdCreate('ro', PAGE, true);
    const ro = native.mmap(fd, PAGE, 0, false);
    try {
      native.pwrite(fd, Buffer.from('hello'), 0);
      assert.equal(Buffer.from(ro, 0, 5).toString(), 'hello');
    } finally {
      native.munmap(ro);
      native.close(fd);
    }
  });

  it('a writable mapping of a read-only fd fails with EACCES', () => {
    const fd = native.memfdCreate('rdonly', PAGE, true);
    const ro = fs.openSync(`/proc/self/fd/${fd}`, 'r');
    try {
      assertErrno(() => native.mmap(ro, PAGE, 0, true), 'EACCES', 'mmap');
      const ab = native.mmap(ro, PAGE, 0, false);
      native.munmap(ab);
    } finally {
      fs.closeSync(ro);
      native.close(fd);
    }
  });

  it('munmap detaches every view and is idempotent', () => {
    const fd = native.memfdCreate('detach', PAGE, true);
    const ab = native.mmap(fd, PAGE, 0, true);
    const view = new Int32Array(ab);
    const buf = Buffer.from(ab);
    const count = native.mappingCount();
    native.munmap(ab);
    assert.equal(native.mappingCount(), count - 1);
    assert.equal(ab.byteLength, 0);
    assert.equal(view.length, 0);
    assert.equal(buf.length, 0);
    assert.equal(view[0], undefined);
    assert.throws(() => Atomics.load(view, 0), TypeError);
    native.munmap(ab);
    native.munmap(ab);
    assert.equal(native.mappingCount(), count - 1);
    native.close(fd);
  });

  it('munmap rejects buffers it did not create', () => {
    assertErrno(() => native.munmap(new ArrayBuffer(PAGE)), 'EINVAL', 'munmap');
    const detached = new ArrayBuffer(8);
    structuredClone(detached, { transfer: [detached] });
    assertErrno(() => native.munmap(detached), 'EINVAL', 'munmap');
    assertTypeError(() => callRaw('munmap', new Uint8Array(8)));
    assertTypeError(() => callRaw('munmap', new SharedArrayBuffer(8)));
    assertTypeError(() => callRaw('munmap', undefined));
  });

  it('the GC finalizer releases a mapping that was never unmapped', async () => {
    const fd = native.memfdCreate('gc', PAGE, true);
    const count = native.mappingCount();
    (() => {
      const ab = native.mmap(fd, PAGE, 0, true);
      new Uint8Array(ab)[0] = 1;
    })();
    assert.equal(native.mappingCount(), count + 1);
    for (let i = 0; i < 20 && native.mappingCount() !== count; i++) await collectGarbage();
    assert.equal(native.mappingCount(), count);
    native.close(fd);
  });

  it('GC after munmap neither crashes nor unmaps a newer mapping at the same address', async () => {
    const fd = native.memfdCreate('gc2', PAGE, true);
    for (let i = 0; i < 50; i++) native.munmap(native.mmap(fd, PAGE, 0, true));
    // The kernel tends to reuse the address just freed: this mapping may sit where the
    // collected buffers were. Their finalizers must leave it alone.
    const live = native.mmap(fd, PAGE, 0, true);
    const view = new Uint8Array(live);
    await collectGarbage();
    await collectGarbage();
    view[100] = 5;
    assert.equal(view[100], 5);
    native.munmap(live);
    native.close(fd);
  });

  it('survives GC after munmap in a child process run with --expose-gc', () => {
    const r = runChild(
      `
      const fd = native.memfdCreate('child', 4096, true);
      (() => {
        for (let i = 0; i < 100; i++) {
          const ab = native.mmap(fd, 4096, 0, true);
          new Uint8Array(ab)[i] = i;
          if (i % 2 === 0) native.munmap(ab);
        }
      })();
      for (let i = 0; i < 20 && native.mappingCount() > 0; i++) {
        globalThis.gc();
        await new Promise((r) => setImmediate(r));
      }
      const again = native.mmap(fd, 4096, 0, true);
      console.log(new Uint8Array(again)[99], new Uint8Array(again)[98], native.mappingCount());
      `,
      { nodeFlags: ['--expose-gc'] },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), '99 98 1');
  });

  it('validates its arguments', () => {
    const fd = native.memfdCreate('args', 2 * PAGE, true);
    try {
      assertRangeError(() => native.mmap(fd, 0, 0, true));
      assertRangeError(() => native.mmap(fd, PAGE, 100, true));
      assertRangeError(() => native.mmap(fd, PAGE, -PAGE, true));
      assertRangeError(() => native.mmap(fd, -1, 0, true));
      // Past the end of a regular file: every access would raise SIGBUS.
      assertRangeError(() => native.mmap(fd, 3 * PAGE, 0, true));
      assertRangeError(() => native.mmap(fd, PAGE, 2 * PAGE, true));
      assertTypeError(() => callRaw('mmap', fd, PAGE, 0, 'yes'));
      assertTypeError(() => callRaw('mmap', fd, BigInt(PAGE), 0, true));
      assertErrno(() => native.mmap(999999, PAGE, 0, true), 'EBADF');
    } finally {
      native.close(fd);
    }
  });
});

describe('pread / pwrite', () => {
  checkLeaks();

  it('accept number and bigint offsets, including offsets beyond 2^32', () => {
    const fd = native.memfdCreate('pio', PAGE, false);
    try {
      assert.equal(native.pwrite(fd, Buffer.from('abcdef'), 2n), 6);
      const out = Buffer.alloc(4);
      assert.equal(native.pread(fd, out, 3), 4);
      assert.equal(out.toString(), 'bcde');
      // A sparse write far out, addressed by bigint.
      const far = 2n ** 33n + 5n;
      assert.equal(native.pwrite(fd, new Uint8Array([42, 43]), far), 2);
      assert.equal(native.fdSize(fd), Number(far) + 2);
      const two = new Uint8Array(2);
      assert.equal(native.pread(fd, two, far), 2);
      assert.deepEqual([...two], [42, 43]);
      assert.equal(native.pread(fd, two, Number(far)), 2);
      // At end of file pread reads nothing.
      assert.equal(native.pread(fd, two, far + 2n), 0);
      // Any ArrayBufferView works; writes go to its own window of the buffer.
      const big = new Uint8Array([0, 0, 7, 8, 0]);
      assert.equal(native.pwrite(fd, big.subarray(2, 4), 0), 2);
      native.pread(fd, out, 0);
      assert.deepEqual([...out], [7, 8, 0x61, 0x62]);
    } finally {
      native.close(fd);
    }
  });

  it('rejects bad offsets and buffers and reports syscall errors', () => {
    const fd = native.memfdCreate('pio-args', PAGE, false);
    try {
      assertRangeError(() => native.pread(fd, Buffer.alloc(1), -1));
      assertRangeError(() => native.pread(fd, Buffer.alloc(1), -1n));
      assertRangeError(() => native.pwrite(fd, Buffer.alloc(1), 2n ** 63n));
      assertRangeError(() => native.pwrite(fd, Buffer.alloc(1), 0.5));
      assertTypeError(() => callRaw('pread', fd, Buffer.alloc(1), '0'));
      assertTypeError(() => callRaw('pread', fd, [1, 2], 0));
      assertTypeError(() => callRaw('pwrite', fd, 'text', 0));
    } finally {
      native.close(fd);
    }
    assertErrno(() => native.pread(999999, Buffer.alloc(1), 0), 'EBADF', 'pread');
    const [a, b] = native.socketpair('stream');
    try {
      assertErrno(() => native.pwrite(a, Buffer.alloc(1), 0), 'ESPIPE', 'pwrite');
    } finally {
      native.close(a);
      native.close(b);
    }
  });
});
