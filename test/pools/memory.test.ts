// Memory really comes back (docs/pools.md, "Freeing"): a vchan's rings are not committed at
// setup, and a freed pool extent gives its pages back to the system while reading as zeros.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { native } from '../../src/native.js';
import { MemfdResourceFactory } from '../../src/daemon/registry/vchan-resources.js';
import { fixture, pageRound } from './fixture.js';

const MiB = 1024 * 1024;
/** Bytes of memory a memfd really holds (st_blocks is in 512-byte units). */
const committed = (fd: number): number => fs.fstatSync(fd).blocks * 512;

test('a host vchan with 2 × 64 MiB rings commits only its control page at setup', () => {
  const res = new MemfdResourceFactory().create({ c2sOrder: 26, s2cOrder: 26 });
  try {
    assert.ok(res.server.kind === 'fds');
    assert.ok(committed(res.server.shm) <= 64 * 1024, `committed ${committed(res.server.shm)} bytes`);
  } finally {
    res.release();
  }
});

test('a freed pool extent reads as zeros and its pages go back', async () => {
  const f = fixture({ poolSize: 8 * MiB, poolVectors: 4 });
  try {
    f.pm.addDomain(1);
    await f.join(f.of(1)[0]!);
    const res = f.pm.create({ c2sOrder: 21, s2cOrder: 21 }, 0, 1);
    assert.ok(res.server.kind === 'fds', 'the host side gets the pool memfd');
    const shm = res.server.shm;
    const len = pageRound(res.shmLength);
    const before = committed(shm);
    const view = native.mmap(shm, len, res.shmOffset, true);
    try {
      new Uint8Array(view).fill(0xab, 4096);
      assert.ok(committed(shm) >= before + 3 * MiB, 'the data pages are committed once written');
      res.release();
      assert.ok(committed(shm) <= before + 64 * 1024, `after free: ${committed(shm) - before} bytes above the start`);
      assert.ok(
        new Uint8Array(view).every((b) => b === 0),
        'what the vchan carried is gone',
      );
    } finally {
      native.munmap(view);
    }
    f.close();
  } finally {
    f.dispose();
  }
});
