#!/usr/bin/env node
// Writes ring-vectors.json (docs/ring-protocol.md §9). Every expectation below is
// written by hand from the spec; nothing here runs either ring implementation.
// Regenerate with: node test/vectors/generate.mjs
import { writeFileSync } from 'node:fs';

const HDR = 4096;
const F = {
  c2s_prod: 64, s2c_cons: 68, client_state: 72, c2s_wraps: 76,
  s2c_prod: 128, c2s_cons: 132, server_state: 136, s2c_wraps: 140,
  client_notify: 192, server_notify: 196,
};
const hex = (b) => Buffer.from(b).toString('hex');
const u32 = (field, v) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return { offset: F[field], hex: hex(b) };
};
function header(c2s, s2c, over = {}) {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(over.magic ?? 0x4e48434b, 0);
  b.writeUInt16LE(over.version ?? 1, 4);
  b.writeUInt16LE(over.header_size ?? HDR, 6);
  b.writeUInt8(over.c2s_order ?? c2s, 8);
  b.writeUInt8(over.s2c_order ?? s2c, 9);
  b.writeUInt32LE(HDR, 12);
  b.writeUInt32LE(HDR + 2 ** c2s, 16);
  return { offset: 0, hex: hex(b) };
}
/** A region as the allocator leaves it (§3): server connected, client waiting, client_notify = WRITE. */
function fresh(c2s, s2c, clientState = 2) {
  return [header(c2s, s2c), u32('server_state', 1), u32('client_state', clientState), u32('client_notify', 1)];
}
const pattern = (n, seed) => Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
const c2sAt = (pos, bytes) => ({ offset: HDR + pos, hex: hex(bytes) });
const s2cAt = (c2s, pos, bytes) => ({ offset: HDR + 2 ** c2s + pos, hex: hex(bytes) });

const V = [];
const add = (v) => V.push({ c2s_order: 10, s2c_order: 10, private: { read_cons: 0, write_prod: 0 }, ...v });

// --- reads (server reads c2s) ---
add({ name: 'server read on empty ring returns 0', role: 'server', image: fresh(10, 10, 1),
  op: { kind: 'read', size: 64 }, expect: { result: 0, fields: { c2s_cons: 0 }, kick: false } });
{
  const d = pattern(100, 1);
  add({ name: 'server read 100 bytes', role: 'server',
    image: [...fresh(10, 10, 1), u32('client_notify', 0), u32('c2s_prod', 100), c2sAt(0, d)],
    op: { kind: 'read', size: 4096 }, expect: { result: 100, hex: hex(d), fields: { c2s_cons: 100 }, kick: false } });
  add({ name: 'read answers a pending READ request with one kick and clears it', role: 'server',
    image: [...fresh(10, 10, 1), u32('c2s_prod', 100), u32('server_notify', 2), c2sAt(0, d)],
    op: { kind: 'read', size: 100 }, expect: { result: 100, hex: hex(d), fields: { c2s_cons: 100, server_notify: 0 }, kick: true } });
  add({ name: 'read smaller than available takes only what was asked', role: 'server',
    image: [...fresh(10, 10, 1), u32('c2s_prod', 100), c2sAt(0, d)],
    op: { kind: 'read', size: 10 }, expect: { result: 10, hex: hex(d.slice(0, 10)), fields: { c2s_cons: 10 }, kick: false } });
}
{
  const d = pattern(100, 3);
  add({ name: 'read across the end of the ring', role: 'server', private: { read_cons: 1000, write_prod: 0 },
    image: [...fresh(10, 10, 1), u32('c2s_cons', 1000), u32('c2s_prod', 1100), c2sAt(1000, d.slice(0, 24)), c2sAt(0, d.slice(24))],
    op: { kind: 'read', size: 200 }, expect: { result: 100, hex: hex(d), fields: { c2s_cons: 1100 }, kick: false } });
  const start = 0xfffffff0;
  add({ name: 'read across the u32 index wrap', role: 'server', private: { read_cons: start, write_prod: 0 },
    image: [...fresh(10, 10, 1), u32('c2s_cons', start), u32('c2s_prod', 0x10), c2sAt(start % 1024, d.slice(0, 16)), c2sAt(0, d.slice(16, 32))],
    op: { kind: 'read', size: 100 }, expect: { result: 32, hex: hex(d.slice(0, 32)), fields: { c2s_cons: 0x10 }, kick: false } });
}
add({ name: 'producer more than a ring ahead is corrupt', role: 'server',
  image: [...fresh(10, 10, 1), u32('c2s_prod', 1025)], op: { kind: 'read', size: 10 }, expect: { result: 'corrupt', kick: false } });
add({ name: 'producer behind our consumer is corrupt', role: 'server', private: { read_cons: 500, write_prod: 0 },
  image: [...fresh(10, 10, 1), u32('c2s_cons', 500), u32('c2s_prod', 499)], op: { kind: 'read', size: 10 }, expect: { result: 'corrupt', kick: false } });
add({ name: 'our consumer index overwritten by the peer is ignored', role: 'server', private: { read_cons: 0, write_prod: 0 },
  image: [...fresh(10, 10, 1), u32('c2s_cons', 900), u32('c2s_prod', 4), c2sAt(0, [1, 2, 3, 4])],
  op: { kind: 'read', size: 10 }, expect: { result: 4, hex: '01020304', fields: { c2s_cons: 4 }, kick: false } });
add({ name: 'client state outside 0..2 is corrupt', role: 'server',
  image: [...fresh(10, 10, 1), u32('client_state', 7)], op: { kind: 'read', size: 10 }, expect: { result: 'corrupt', kick: false } });
add({ name: 'server state 2 is corrupt for a client', role: 'client',
  image: [...fresh(10, 10, 1), u32('server_state', 2)], op: { kind: 'read', size: 10 }, expect: { result: 'corrupt', kick: false } });
add({ name: 'data written before the peer closed is still read', role: 'server',
  image: [...fresh(10, 10, 0), u32('c2s_prod', 3), c2sAt(0, [9, 8, 7])],
  op: { kind: 'read', size: 10 }, expect: { result: 3, hex: '090807', fields: { c2s_cons: 3 }, kick: false } });
add({ name: 'empty ring and closed peer is end of stream', role: 'server', private: { read_cons: 3, write_prod: 0 },
  image: [...fresh(10, 10, 0), u32('c2s_prod', 3), u32('c2s_cons', 3)], op: { kind: 'read', size: 10 }, expect: { result: 'eof', kick: false } });
add({ name: 'waiting client and empty ring reads 0', role: 'server', image: fresh(10, 10, 2),
  op: { kind: 'read', size: 10 }, expect: { result: 0, kick: false } });
{
  const d = pattern(50, 5);
  add({ name: 'client reads the s2c ring', role: 'client', c2s_order: 10, s2c_order: 12,
    image: [...fresh(10, 12, 1), u32('s2c_prod', 50), s2cAt(10, 0, d)],
    op: { kind: 'read', size: 64 }, expect: { result: 50, hex: hex(d), fields: { s2c_cons: 50 }, kick: false } });
}
// --- packet receive ---
add({ name: 'recv waits for the whole packet', role: 'server', image: [...fresh(10, 10, 1), u32('c2s_prod', 10)],
  op: { kind: 'recv', size: 20 }, expect: { result: 0, fields: { c2s_cons: 0 }, kick: false } });
add({ name: 'recv takes exactly the packet', role: 'server',
  image: [...fresh(10, 10, 1), u32('c2s_prod', 30), c2sAt(0, pattern(30, 9))],
  op: { kind: 'recv', size: 20 }, expect: { result: 20, hex: hex(pattern(20, 9)), fields: { c2s_cons: 20 }, kick: false } });
add({ name: 'recv with a closed peer and too few bytes is end of stream', role: 'server',
  image: [...fresh(10, 10, 0), u32('c2s_prod', 10)], op: { kind: 'recv', size: 20 }, expect: { result: 'eof', kick: false } });
add({ name: 'recv larger than the ring is refused', role: 'server', image: fresh(10, 10, 1),
  op: { kind: 'recv', size: 1025 }, expect: { result: 'msgsize', kick: false } });
// --- writes (server writes s2c) ---
{
  const d = pattern(100, 11);
  add({ name: 'server writes 100 bytes', role: 'server', image: fresh(10, 10, 1),
    op: { kind: 'write', hex: hex(d) }, expect: { result: 100, fields: { s2c_prod: 100 }, kick: false,
      region: [s2cAt(10, 0, d)] } });
  add({ name: 'write answers a pending WRITE request with one kick', role: 'server',
    image: [...fresh(10, 10, 1), u32('server_notify', 1)],
    op: { kind: 'write', hex: hex(d) }, expect: { result: 100, fields: { s2c_prod: 100, server_notify: 0 }, kick: true } });
  add({ name: 'a READ request is not answered by a write', role: 'server',
    image: [...fresh(10, 10, 1), u32('server_notify', 2)],
    op: { kind: 'write', hex: hex(d) }, expect: { result: 100, fields: { server_notify: 2 }, kick: false } });
  add({ name: 'stream write fills only the free space', role: 'server', private: { read_cons: 0, write_prod: 974 },
    image: [...fresh(10, 10, 1), u32('s2c_prod', 974), u32('s2c_cons', 0)],
    op: { kind: 'write', hex: hex(d) }, expect: { result: 50, fields: { s2c_prod: 1024 }, kick: false,
      region: [s2cAt(10, 974, d.slice(0, 50))] } });
  add({ name: 'write into a full ring returns 0', role: 'server', private: { read_cons: 0, write_prod: 1024 },
    image: [...fresh(10, 10, 1), u32('s2c_prod', 1024)], op: { kind: 'write', hex: hex(d) }, expect: { result: 0, fields: { s2c_prod: 1024 }, kick: false } });
  add({ name: 'write wraps around the end of the ring', role: 'server', private: { read_cons: 0, write_prod: 1000 },
    image: [...fresh(10, 10, 1), u32('s2c_prod', 1000), u32('s2c_cons', 1000)],
    op: { kind: 'write', hex: hex(d) }, expect: { result: 100, fields: { s2c_prod: 1100 }, kick: false,
      region: [s2cAt(10, 1000, d.slice(0, 24)), s2cAt(10, 0, d.slice(24))] } });
  add({ name: 'write past the u32 index wrap counts a wrap', role: 'server', private: { read_cons: 0, write_prod: 0xffffffc0 },
    image: [...fresh(10, 10, 1), u32('s2c_prod', 0xffffffc0), u32('s2c_cons', 0xffffffc0)],
    op: { kind: 'write', hex: hex(d) }, expect: { result: 100, fields: { s2c_prod: 0x24, s2c_wraps: 1 }, kick: false } });
  add({ name: 'write to a closed peer fails', role: 'server', image: fresh(10, 10, 0),
    op: { kind: 'write', hex: hex(d) }, expect: { result: 'closed', fields: { s2c_prod: 0 }, kick: false } });
  add({ name: 'server may write before a client attached', role: 'server', image: fresh(10, 10, 2),
    op: { kind: 'write', hex: hex(d) }, expect: { result: 100, fields: { s2c_prod: 100 }, kick: false } });
  add({ name: 'consumer index ahead of our producer is corrupt', role: 'server', private: { read_cons: 0, write_prod: 10 },
    image: [...fresh(10, 10, 1), u32('s2c_prod', 10), u32('s2c_cons', 11)], op: { kind: 'write', hex: hex(d) }, expect: { result: 'corrupt', kick: false } });
  add({ name: 'consumer more than a ring behind is corrupt', role: 'server', private: { read_cons: 0, write_prod: 2000 },
    image: [...fresh(10, 10, 1), u32('s2c_prod', 2000), u32('s2c_cons', 975)], op: { kind: 'write', hex: hex(d) }, expect: { result: 'corrupt', kick: false } });
  add({ name: 'client writes the c2s ring and answers the initial WRITE request', role: 'client', c2s_order: 11, s2c_order: 10,
    image: fresh(11, 10, 1), op: { kind: 'write', hex: hex(d) },
    expect: { result: 100, fields: { c2s_prod: 100, client_notify: 0 }, kick: true, region: [c2sAt(0, d)] } });
}
// --- packet send ---
add({ name: 'send that does not fit writes nothing', role: 'server', private: { read_cons: 0, write_prod: 1000 },
  image: [...fresh(10, 10, 1), u32('s2c_prod', 1000)], op: { kind: 'send', hex: hex(pattern(30, 1)) }, expect: { result: 0, fields: { s2c_prod: 1000 }, kick: false } });
add({ name: 'send of exactly the ring size into an empty ring', role: 'server', image: fresh(10, 10, 1),
  op: { kind: 'send', hex: hex(pattern(1024, 2)) }, expect: { result: 1024, fields: { s2c_prod: 1024 }, kick: false } });
add({ name: 'send larger than the ring is refused', role: 'server', image: fresh(10, 10, 1),
  op: { kind: 'send', hex: hex(pattern(1025, 2)) }, expect: { result: 'msgsize', fields: { s2c_prod: 0 }, kick: false } });
add({ name: 'send to a closed peer fails even with room', role: 'client', image: [...fresh(10, 10, 1), u32('server_state', 0)],
  op: { kind: 'send', hex: '00' }, expect: { result: 'closed', kick: false } });
// --- notification arming ---
add({ name: 'server data_ready arms WRITE in client_notify', role: 'server',
  image: [...fresh(10, 10, 1), u32('client_notify', 0), u32('c2s_prod', 7)], op: { kind: 'data_ready' },
  expect: { result: 7, fields: { client_notify: 1 }, kick: false } });
add({ name: 'client buffer_space arms READ in server_notify', role: 'client',
  image: [...fresh(10, 10, 1), u32('c2s_prod', 24)], private: { read_cons: 0, write_prod: 24 },
  op: { kind: 'buffer_space' }, expect: { result: 1000, fields: { server_notify: 2 }, kick: false } });
add({ name: 'buffer_space right after init is the full ring', role: 'server', c2s_order: 12, s2c_order: 16,
  image: fresh(12, 16, 2), op: { kind: 'buffer_space' }, expect: { result: 65536, fields: { client_notify: 3 }, kick: false } });
add({ name: 'data_ready on a corrupt ring is an error', role: 'client',
  image: [...fresh(10, 10, 1), u32('s2c_prod', 5000)], op: { kind: 'data_ready' }, expect: { result: 'corrupt', kick: false } });
// --- attach / close / setup ---
add({ name: 'client attach marks connected, asks for writes, kicks once', role: 'client', image: fresh(10, 10, 2),
  op: { kind: 'attach' }, expect: { result: 0, fields: { client_state: 1, server_notify: 1, client_notify: 1 }, kick: true } });
add({ name: 'server close marks closed and kicks', role: 'server', image: fresh(10, 10, 1),
  op: { kind: 'close' }, expect: { result: 0, fields: { server_state: 0 }, kick: true } });
add({ name: 'client close marks closed and kicks', role: 'client', image: fresh(10, 10, 1),
  op: { kind: 'close' }, expect: { result: 0, fields: { client_state: 0 }, kick: true } });
add({ name: 'wrong magic is refused at setup', role: 'client', image: [header(10, 10, { magic: 0x12345678 }), u32('server_state', 1)],
  op: { kind: 'read', size: 1 }, expect: { result: 'corrupt', kick: false } });
add({ name: 'orders that differ from the private setup are refused', role: 'server', c2s_order: 10, s2c_order: 10,
  image: [header(10, 10, { s2c_order: 20 }), u32('server_state', 1), u32('client_state', 1)],
  op: { kind: 'read', size: 1 }, expect: { result: 'corrupt', kick: false } });
add({ name: 'unknown layout version is refused', role: 'server', image: [header(10, 10, { version: 2 }), u32('server_state', 1)],
  op: { kind: 'read', size: 1 }, expect: { result: 'corrupt', kick: false } });

const out = new URL('./ring-vectors.json', import.meta.url);
writeFileSync(out, JSON.stringify({ version: 1, spec: 'docs/ring-protocol.md', vectors: V }, null, 1) + '\n');
console.log(`wrote ${V.length} vectors to ${out.pathname}`);
