// Allocator property test: random alloc/free sequences against a page-level model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SlotAllocator, PAGE, type Extent } from '../../src/daemon/pools/slot-allocator.js';
import { Prng } from '../helpers/prng.js';

test('extents never overlap, stay in bounds, and all space returns after frees', () => {
  const rng = new Prng(31337);
  const pages = 256;
  const a = new SlotAllocator(pages * PAGE, 16, 1);
  const owner = new Int32Array(pages).fill(-1);
  const live: Extent[] = [];
  for (let step = 0; step < 20000; step++) {
    if (live.length > 0 && rng.next() % 3 === 0) {
      const x = live.splice(rng.int(0, live.length - 1), 1)[0]!;
      a.freeExtent(x);
      for (let p = x.offset / PAGE; p < (x.offset + x.length) / PAGE; p++) owner[p] = -1;
      continue;
    }
    const want = rng.int(1, 40 * PAGE);
    const x = a.allocExtent(want);
    if (x === null) {
      assert.ok(a.largestFree < want, 'refused only when nothing large enough is free');
      continue;
    }
    assert.equal(x.offset % PAGE, 0);
    assert.ok(x.length >= want && x.offset + x.length <= pages * PAGE);
    for (let p = x.offset / PAGE; p < (x.offset + x.length) / PAGE; p++) {
      assert.equal(owner[p], -1, `page ${p} handed out twice`);
      owner[p] = step;
    }
    live.push(x);
    assert.equal(a.freeBytes, owner.filter((o) => o === -1).length * PAGE);
  }
  for (const x of live) a.freeExtent(x);
  assert.equal(a.freeBytes, pages * PAGE);
  assert.equal(a.largestFree, pages * PAGE, 'free space coalesced back into one extent');
});

test('double free and foreign extents are refused', () => {
  const a = new SlotAllocator(16 * PAGE, 4);
  const x = a.allocExtent(PAGE)!;
  a.freeExtent(x);
  assert.throws(
    () => {
      a.freeExtent(x);
    },
    { code: 'KVMCHAN_E_INVALID_ARG' },
  );
  assert.throws(
    () => {
      a.freeExtent({ offset: 3, length: PAGE });
    },
    { code: 'KVMCHAN_E_INVALID_ARG' },
  );
});

test('vectors: reserved ones are never handed out; exhaustion returns null', () => {
  const a = new SlotAllocator(16 * PAGE, 4, 1);
  const got = [a.allocVector(), a.allocVector(), a.allocVector()];
  assert.deepEqual(got.sort(), [1, 2, 3]);
  assert.equal(a.allocVector(), null);
  a.freeVector(2);
  assert.equal(a.allocVector(), 2);
  assert.throws(
    () => {
      a.freeVector(0);
    },
    { code: 'KVMCHAN_E_INVALID_ARG' },
  );
});
