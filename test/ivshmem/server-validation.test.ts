// Invalid configurations are refused by the constructor, before a socket exists, so nothing
// can ever reach QEMU (a non-power-of-two shm would abort the VM: docs/ivshmem.md §3).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { IvshmemServer } from '../../src/ivshmem/server.js';
import { MAX_VECTORS, checkShmSize, decodeMessage, encodeMessage, isPowerOfTwo } from '../../src/ivshmem/protocol.js';
import { native } from '../../src/native.js';
import { InvalidArgumentError, KvmchanError } from '../../src/errors.js';
import { openFdCount } from '../helpers/ivshmem-test-client.js';
import { memfd, tempDir } from './util.js';

function refused(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KvmchanError, `not a KvmchanError: ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

test('isPowerOfTwo and checkShmSize, including sizes beyond 32 bits', () => {
  for (const n of [1, 2, 4096, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 52]) assert.ok(isPowerOfTwo(n), String(n));
  for (const n of [0, -4096, 3, 4097, 3 * 4096, 2 ** 32 + 4096, 2 ** 52 + 1, 1.5, NaN, Infinity]) {
    assert.ok(!isPowerOfTwo(n), String(n));
  }
  checkShmSize(4096);
  checkShmSize(2 ** 30);
  assert.throws(() => {
    checkShmSize(2048);
  }, InvalidArgumentError);
  assert.throws(() => {
    checkShmSize(2 ** 20 + 4096);
  }, /not a power of two/);
  assert.throws(() => {
    checkShmSize(2 ** 41);
  }, InvalidArgumentError);
});

test('message codec: 8 bytes LE, values outside -1..65535 decode as invalid', () => {
  assert.equal(encodeMessage(-1).toString('hex'), 'ffffffffffffffff');
  assert.equal(encodeMessage(65535).toString('hex'), 'ffff000000000000');
  assert.equal(decodeMessage(encodeMessage(-1)), -1);
  assert.equal(decodeMessage(encodeMessage(65535)), 65535);
  assert.equal(decodeMessage(encodeMessage(65536)), null);
  assert.equal(decodeMessage(encodeMessage(-2)), null);
  assert.equal(decodeMessage(encodeMessage(-(2n ** 63n))), null);
  assert.throws(() => decodeMessage(new Uint8Array(7)), InvalidArgumentError);
});

test('invalid configurations are refused before anything listens', () => {
  const t = tempDir();
  const path = t.sock('d.sock');
  const good = memfd(1 << 20);
  const odd = memfd((1 << 20) + 4096, false);
  const small = memfd(2048, false);
  const [sa, sb] = native.socketpair('stream');
  const fdsBefore = openFdCount();
  try {
    const base = { socketPath: path, shmFd: good, vectors: 1 };
    refused(() => new IvshmemServer({ ...base, shmFd: odd }), /not a power of two/);
    refused(() => new IvshmemServer({ ...base, shmFd: small }), /out of range/);
    refused(() => new IvshmemServer({ ...base, shmSize: 1 << 21 }), /does not match/);
    refused(() => new IvshmemServer({ ...base, vectors: 0 }), /vectors/);
    refused(() => new IvshmemServer({ ...base, vectors: MAX_VECTORS + 1 }), /vectors/);
    refused(() => new IvshmemServer({ ...base, vectors: 1.5 }), /vectors/);
    refused(() => new IvshmemServer({ ...base, shmFd: -1 }), /valid file descriptor/);
    refused(() => new IvshmemServer({ ...base, shmFd: 987654 }), /not usable/);
    refused(() => new IvshmemServer({ ...base, shmFd: sa }), /not a memfd or regular file/);
    refused(() => new IvshmemServer({ ...base, firstPeerId: 65536 }), /firstPeerId/);
    refused(() => new IvshmemServer({ ...base, firstPeerId: 0 }), /collides/);
    refused(() => new IvshmemServer({ ...base, maxClients: 0 }), /maxClients/);
    refused(() => new IvshmemServer({ ...base, socketPath: `${t.dir}/${'x'.repeat(120)}` }), /longer than/);
    refused(() => new IvshmemServer({ ...base, socketPath: '' }), /non-empty/);
    // Nothing was created: no socket file, no fd left open.
    assert.equal(fs.existsSync(path), false);
    assert.equal(openFdCount(), fdsBefore);

    // The largest valid vector count and a valid config work.
    const dev = new IvshmemServer({ ...base, vectors: MAX_VECTORS });
    assert.equal(dev.host!.vectors, MAX_VECTORS);
    dev.close();
    assert.equal(openFdCount(), fdsBefore);
  } finally {
    for (const fd of [good, odd, small, sa, sb]) native.close(fd);
    t.cleanup();
  }
});

test('the device duplicates the shm fd: the caller may close its own', () => {
  const t = tempDir();
  const fd = memfd(8192);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: fd, vectors: 1 });
  native.close(fd);
  const buf = dev.host!.map();
  assert.equal(buf.byteLength, 8192);
  new Uint8Array(buf)[8191] = 7;
  dev.close();
  assert.equal(buf.byteLength, 0, 'closing the device unmapped (detached) its mappings');
  t.cleanup();
});

test('addLocalPeer refuses ids in use and ids reserved for fixed sockets', () => {
  const t = tempDir();
  const fd = memfd(4096);
  const dev = new IvshmemServer({ socketPath: t.sock('d.sock'), shmFd: fd, vectors: 1 });
  try {
    dev.addSocket(t.sock('fixed.sock'), 5);
    refused(() => dev.addLocalPeer(0), /in use/);
    refused(() => dev.addLocalPeer(5), /reserved/);
    refused(() => dev.addLocalPeer(70000), /peer id/);
    const p = dev.addLocalPeer();
    assert.equal(p.ivPosition, 1);
  } finally {
    dev.close();
    native.close(fd);
    t.cleanup();
  }
  refused(() => dev.addLocalPeer(), /closed/);
});
