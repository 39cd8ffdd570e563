// Paging of the LIST_* replies (wire-protocol.md §6.6, §6.11): following `next` from 0 yields
// every entry exactly once, ascending, even when keys repeat — region ids are unique per owner
// domain only, so several regions can share one id and must never straddle two replies.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { page } from '../../src/daemon/request-handler.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';

interface Item {
  key: number;
  n: number;
}

/** Every page from start 0 on, as a requester walks them. */
function walk(all: Item[], max: number): Item[][] {
  const pages: Item[][] = [];
  for (let start = 0; ;) {
    const p = page(all, (i) => i.key, start, max);
    pages.push(p.entries);
    if (p.next === 0) return pages;
    assert.ok(p.next > start || (start === 0 && p.next > 0), `next ${p.next} moves forward from ${start}`);
    start = p.next;
  }
}

test('equal keys never straddle two pages; every entry is listed once', (t) => {
  const seed = seedFromEnv(0x51ab);
  t.diagnostic(`seed ${seed}`);
  const rng = new Prng(seed);
  for (let round = 0; round < 200; round++) {
    const max = rng.int(2, 12);
    const all: Item[] = [];
    // Keys from 1 (0 is the end-of-list cursor), groups of 1..max-1 equal keys.
    for (let key = rng.int(1, 3), n = 0; all.length < rng.int(0, 60); key += rng.int(1, 3)) {
      for (let g = rng.int(1, max - 1); g > 0; g--) all.push({ key, n: n++ });
    }
    const pages = walk(all, max);
    assert.deepEqual(pages.flat(), all, `round ${round}: every entry once, in order`);
    for (const [i, p] of pages.entries()) {
      assert.ok(p.length <= max, 'a page holds at most max entries');
      const next = pages[i + 1];
      if (next !== undefined && next.length > 0 && p.length > 0) {
        assert.notEqual(p.at(-1)!.key, next[0]!.key, `round ${round}: key ${next[0]!.key} split across two pages`);
      }
    }
  }
});

test('unique keys fill each page to max, as LIST_VCHANS always did', () => {
  const all = Array.from({ length: 25 }, (_, i) => ({ key: i + 1, n: i }));
  assert.deepEqual(
    walk(all, 10).map((p) => p.length),
    [10, 10, 5],
  );
  assert.deepEqual(page(all, (i) => i.key, 11, 10).next, 21);
});

test('more equal keys than a page holds: a full page of them, then the walk goes on after the key', () => {
  const all = [...Array.from({ length: 7 }, (_, i) => ({ key: 5, n: i })), { key: 6, n: 7 }];
  const pages = walk(all, 4);
  assert.deepEqual(
    pages.map((p) => p.map((i) => i.n)),
    [[0, 1, 2, 3], [7]],
  );
  assert.deepEqual(page(all.slice(0, 7), (i) => i.key, 0, 4).next, 0, 'nothing after the key: the end');
});
