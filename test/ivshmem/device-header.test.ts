// Device header (docs/ivshmem.md §9): encoding, decoding, and what a guest accepts, including
// headers scribbled by a hostile pair-pool peer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEVICE_HEADER_SIZE,
  DeviceKind,
  controlMismatch,
  decodeDeviceHeader,
  encodeControlHeader,
  encodePoolHeader,
  newDeviceKey,
  poolMismatch,
  poolTag,
} from '../../src/ivshmem/device-header.js';

const MiB = 1 << 20;
const keyA = newDeviceKey();
const keyB = newDeviceKey();

test('control header round trip; the guest accepts it only with 1 vector, IVPosition 1 and the BAR size', () => {
  const bytes = encodeControlHeader(256 * 1024, 1, keyA);
  assert.equal(bytes.length, DEVICE_HEADER_SIZE);
  assert.equal(bytes.toString('latin1', 0, 4), 'HDVK');
  const h = decodeDeviceHeader(bytes);
  assert.equal(h.kind, DeviceKind.CONTROL);
  assert.deepEqual(h.key, keyA);
  assert.equal(controlMismatch(h, { size: 256 * 1024, vectors: 1, ivPosition: 1 }), null);
  assert.match(controlMismatch(h, { size: 512 * 1024, vectors: 1, ivPosition: 1 })!, /size/);
  assert.match(controlMismatch(h, { size: 256 * 1024, vectors: 1, ivPosition: 2 })!, /IVPosition/);
  // A pool device (≥ 2 vectors) rewritten to claim "control" is refused on the MSI-X count.
  const forged = decodeDeviceHeader(encodeControlHeader(MiB, 64, keyB));
  assert.match(controlMismatch(forged, { size: MiB, vectors: 64, ivPosition: 1 })!, /MSI-X/);
});

test('pool header: each member verifies its own tag; the announcement must match in every field', () => {
  const bytes = encodePoolHeader(7, 64 * MiB, 64, [keyA, keyB]);
  const h = decodeDeviceHeader(bytes);
  assert.equal(h.kind, DeviceKind.POOL);
  const facts1 = { size: 64 * MiB, vectors: 64, ivPosition: 1 };
  const facts2 = { ...facts1, ivPosition: 2 };
  const want1 = { pool: 7, peerId: 1, vectors: 64, size: 64 * MiB };
  const want2 = { ...want1, peerId: 2 };
  assert.equal(poolMismatch(h, facts1, want1, keyA), null);
  assert.equal(poolMismatch(h, facts2, want2, keyB), null);
  assert.match(poolMismatch(h, facts1, want1, keyB)!, /tag/, 'another guest key does not verify');
  assert.match(poolMismatch(h, facts1, { ...want1, pool: 8 }, keyA)!, /pool 7, not 8/);
  assert.match(poolMismatch(h, facts1, { ...want1, size: 32 * MiB }, keyA)!, /size/);
  assert.match(poolMismatch(h, { ...facts1, vectors: 32 }, want1, keyA)!, /vectors/);
  assert.match(poolMismatch(h, facts2, want1, keyA)!, /IVPosition/);
  // A host pool has one member: the second tag slot is zero.
  const single = decodeDeviceHeader(encodePoolHeader(3, MiB, 2, [keyA]));
  assert.ok(single.tags![1].every((x) => x === 0));
  assert.equal(poolMismatch(single, { size: MiB, vectors: 2, ivPosition: 1 }, { pool: 3, peerId: 1, vectors: 2, size: MiB }, keyA), null);
});

test('hostile pair-pool peer: relabelling its pool as one of ours fails the tag check', () => {
  // Guest B (peer 2 of pair pool 5 with A) rewrites the header to claim A's host pool 9, same
  // geometry, IVPosition 1 for A. It can copy A's tag for pool 5, not compute one for pool 9.
  const genuine = encodePoolHeader(5, 64 * MiB, 64, [keyA, keyB]);
  const forged = Buffer.from(genuine);
  forged.writeUInt32LE(9, 8);
  const h = decodeDeviceHeader(forged);
  assert.equal(h.pool, 9);
  assert.match(
    poolMismatch(h, { size: 64 * MiB, vectors: 64, ivPosition: 1 }, { pool: 9, peerId: 1, vectors: 64, size: 64 * MiB }, keyA)!,
    /tag/,
  );
  // With its own key B can only make tags that B verifies.
  const selfMade = Buffer.from(forged);
  poolTag(keyB, { pool: 9, vectors: 64, size: 64 * MiB }, 1).copy(selfMade, 32);
  assert.match(
    poolMismatch(
      decodeDeviceHeader(selfMade),
      { size: 64 * MiB, vectors: 64, ivPosition: 1 },
      { pool: 9, peerId: 1, vectors: 64, size: 64 * MiB },
      keyA,
    )!,
    /tag/,
  );
});

test('malformed headers are refused with a reason, never thrown past the codec', () => {
  const good = encodePoolHeader(5, MiB, 4, [keyA]);
  const cases: [string, (b: Buffer) => void, RegExp][] = [
    ['magic', (b) => b.writeUInt32LE(0, 0), /magic/],
    ['version', (b) => b.writeUInt16LE(2, 4), /version/],
    ['kind', (b) => b.writeUInt16LE(9, 6), /kind/],
    ['vectors 0', (b) => b.writeUInt32LE(0, 12), /vector/],
    ['size not a power of two', (b) => b.writeBigUInt64LE(BigInt(MiB + 4096), 16), /size/],
    ['size huge', (b) => b.writeBigUInt64LE(1n << 62n, 16), /size/],
    ['size tiny', (b) => b.writeBigUInt64LE(2048n, 16), /size/],
    ['reserved', (b) => b.writeUInt32LE(1, 24), /reserved/],
    ['tail', (b) => b.writeUInt8(1, 100), /reserved/],
    ['pool 0', (b) => b.writeUInt32LE(0, 8), /pool 0/],
  ];
  for (const [what, mutate, re] of cases) {
    const b = Buffer.from(good);
    mutate(b);
    assert.throws(
      () => decodeDeviceHeader(b),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'KVMCHAN_E_INVALID_ARG', what);
        assert.match(err.message, re, what);
        return true;
      },
    );
  }
  assert.throws(() => decodeDeviceHeader(new Uint8Array(64)), /need 128/);
  const ctlNoKey = encodeControlHeader(256 * 1024, 1, Buffer.alloc(32));
  assert.throws(() => decodeDeviceHeader(ctlNoKey), /without a key/);
  const ctlPool = Buffer.from(encodeControlHeader(256 * 1024, 1, keyA));
  ctlPool.writeUInt32LE(3, 8);
  assert.throws(() => decodeDeviceHeader(ctlPool), /control device with a pool id/);
  assert.throws(() => decodeDeviceHeader(new Uint8Array(DEVICE_HEADER_SIZE)), /magic/, 'an all-zero page (no header yet)');
});
