// copyBytes: the bulk copy the ring uses for large payloads (native/src/copy.c).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { native } from '../../src/native.js';

test('copyBytes copies exactly the range, at every alignment and length around the 64-byte loop', () => {
  const src = randomBytes(8192);
  for (const len of [0, 1, 15, 16, 63, 64, 65, 127, 128, 129, 1000, 4096]) {
    for (const so of [0, 1, 7, 8, 33]) {
      for (const doff of [0, 3, 16, 61]) {
        const dst = Buffer.alloc(len + doff + 16, 0xee);
        native.copyBytes(dst, doff, src, so, len);
        assert.ok(dst.subarray(doff, doff + len).equals(src.subarray(so, so + len)), `len ${len} src+${so} dst+${doff}`);
        assert.ok(
          dst.subarray(0, doff).every((b) => b === 0xee) && dst.subarray(doff + len).every((b) => b === 0xee),
          'nothing outside the range',
        );
      }
    }
  }
});

test('copyBytes works on mappings and refuses ranges outside either buffer', () => {
  const fd = native.memfdCreate('copy-test', 65536, true);
  const map = new Uint8Array(native.mmap(fd, 65536, 0, true));
  const data = randomBytes(30000);
  native.copyBytes(map, 12345, data, 0, data.length);
  const back = Buffer.alloc(data.length);
  native.copyBytes(back, 0, map, 12345, data.length);
  assert.ok(back.equals(data));
  assert.throws(
    () => {
      native.copyBytes(back, 1, map, 0, back.length);
    },
    { code: 'ERR_OUT_OF_RANGE' },
  );
  assert.throws(
    () => {
      native.copyBytes(back, 0, map, 65536 - 10, 11);
    },
    { code: 'ERR_OUT_OF_RANGE' },
  );
  assert.throws(
    () => {
      native.copyBytes(back, -1, map, 0, 1);
    },
    { code: 'ERR_OUT_OF_RANGE' },
  );
  assert.throws(
    () => {
      native.copyBytes({} as Uint8Array, 0, map, 0, 1);
    },
    { code: 'ERR_INVALID_ARG_TYPE' },
  );
  native.munmap(map.buffer);
  native.close(fd);
});
