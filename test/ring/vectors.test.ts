// Runs the language-neutral conformance vectors (docs/ring-protocol.md §9) through the TS engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RingEndpoint, EOF } from '../../src/ring/endpoint.js';
import { FIELDS, regionLength, type Role } from '../../src/ring/layout.js';
import { KvmchanError } from '../../src/errors.js';

interface Patch {
  offset: number;
  hex: string;
}
interface Vector {
  name: string;
  role: Role;
  c2s_order: number;
  s2c_order: number;
  image: Patch[];
  private: { read_cons: number; write_prod: number };
  op: { kind: string; size?: number; hex?: string };
  expect: { result: number | string; hex?: string; fields?: Record<string, number>; kick: boolean; region?: Patch[] };
}

const file = new URL('../../../test/vectors/ring-vectors.json', import.meta.url);
const doc = JSON.parse(readFileSync(file, 'utf8')) as { vectors: Vector[] };

function outcome(err: unknown): string {
  if (!(err instanceof KvmchanError)) throw err;
  switch (err.code) {
    case 'KVMCHAN_E_CORRUPT':
      return 'corrupt';
    case 'KVMCHAN_E_CLOSED':
      return 'closed';
    case 'KVMCHAN_E_MSGSIZE':
      return 'msgsize';
    default:
      throw err;
  }
}

test('there are conformance vectors', () => {
  assert.ok(doc.vectors.length >= 40);
});

for (const v of doc.vectors) {
  test(`vector: ${v.name}`, () => {
    const len = regionLength({ c2sOrder: v.c2s_order, s2cOrder: v.s2c_order });
    const buf = new ArrayBuffer(len);
    const bytes = new Uint8Array(buf);
    for (const p of v.image) bytes.set(Buffer.from(p.hex, 'hex'), p.offset);
    let kicks = 0;
    let result: number | string;
    let out: Uint8Array | undefined;
    try {
      const ep = new RingEndpoint(
        buf,
        0,
        { role: v.role, c2sOrder: v.c2s_order, s2cOrder: v.s2c_order },
        () => {
          kicks++;
        },
        {
          readCons: v.private.read_cons,
          writeProd: v.private.write_prod,
        },
      );
      const data = Buffer.from(v.op.hex ?? '', 'hex');
      switch (v.op.kind) {
        case 'read':
          out = new Uint8Array(v.op.size ?? 0);
          result = ep.tryRead(out);
          break;
        case 'recv':
          out = new Uint8Array(v.op.size ?? 0);
          result = ep.tryRecv(out);
          break;
        case 'write':
          result = ep.tryWrite(data);
          break;
        case 'send':
          result = ep.trySend(data);
          break;
        case 'data_ready':
          result = ep.dataReady();
          break;
        case 'buffer_space':
          result = ep.bufferSpace();
          break;
        case 'attach':
          ep.attach();
          result = 0;
          break;
        case 'close':
          ep.close();
          result = 0;
          break;
        default:
          throw new Error(`unknown op ${v.op.kind}`);
      }
      if (result === EOF) result = 'eof';
    } catch (err) {
      result = outcome(err);
    }
    assert.equal(result, v.expect.result);
    if (v.expect.hex !== undefined && typeof result === 'number') {
      assert.equal(Buffer.from(out!.subarray(0, result)).toString('hex'), v.expect.hex);
    }
    const dv = new DataView(buf);
    for (const [name, value] of Object.entries(v.expect.fields ?? {})) {
      assert.equal(dv.getUint32(FIELDS[name]!, true), value >>> 0, `field ${name}`);
    }
    for (const p of v.expect.region ?? []) {
      const want = Buffer.from(p.hex, 'hex');
      assert.equal(Buffer.from(bytes.subarray(p.offset, p.offset + want.length)).toString('hex'), p.hex);
    }
    assert.equal(kicks, v.expect.kick ? 1 : 0, 'kicks');
  });
}
