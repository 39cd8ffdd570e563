// A hostile peer writes random values into every shared field while the honest
// side keeps working (ring-protocol.md §6). The honest side must get
// data or a typed error — never an out-of-range count, a foreign exception, or a
// result that contradicts its own request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RingEndpoint, EOF } from '../../src/ring/endpoint.js';
import { initializeRegion, regionLength, HEADER_SIZE } from '../../src/ring/layout.js';
import { KvmchanError } from '../../src/errors.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';

const ALLOWED = new Set(['KVMCHAN_E_CORRUPT', 'KVMCHAN_E_CLOSED', 'KVMCHAN_E_MSGSIZE']);

for (const role of ['server', 'client'] as const) {
  test(`hostile peer scribbling on shared fields (honest ${role})`, () => {
    const seed = seedFromEnv(0xbad5eed);
    const rng = new Prng(seed + (role === 'server' ? 0 : 1));
    let corruptSeen = 0;
    let dataSeen = 0;
    for (let round = 0; round < 200; round++) {
      const c2sOrder = rng.int(10, 12);
      const s2cOrder = rng.int(10, 12);
      const buf = new ArrayBuffer(regionLength({ c2sOrder, s2cOrder }));
      initializeRegion(buf, 0, { c2sOrder, s2cOrder });
      const ctl = new DataView(buf, 0, HEADER_SIZE);
      const honest = new RingEndpoint(buf, 0, { role, c2sOrder, s2cOrder }, () => undefined);
      let corrupt = false;
      for (let step = 0; step < 400; step++) {
        // The peer writes a random value (often a plausible one) into a random control word.
        const off = rng.pick([64, 68, 72, 76, 128, 132, 136, 140, 192, 196, rng.int(0, 1023) * 4]);
        const val = rng.pick([0, 1, 2, 3, rng.int(0, 5000), rng.next(), 0xffffffff, 0x80000000]);
        ctl.setUint32(off, val, true);
        const n = rng.int(0, 3000);
        const op = rng.int(0, 7);
        try {
          let r: number;
          switch (op) {
            case 0: {
              const b = new Uint8Array(n);
              r = honest.tryRead(b);
              assert.ok(r === EOF || (r >= 0 && r <= n && r <= honest.readSize));
              break;
            }
            case 1: {
              const b = new Uint8Array(n);
              r = honest.tryRecv(b);
              assert.ok(r === EOF || r === 0 || r === n);
              break;
            }
            case 2:
              r = honest.tryWrite(rng.bytes(n));
              assert.ok(r >= 0 && r <= n && r <= honest.writeSize);
              break;
            case 3:
              r = honest.trySend(rng.bytes(n));
              assert.ok(r === 0 || r === n);
              break;
            case 4:
              r = honest.dataReady();
              assert.ok(r >= 0 && r <= honest.readSize);
              break;
            case 5:
              r = honest.bufferSpace();
              assert.ok(r >= 0 && r <= honest.writeSize);
              break;
            case 6:
              honest.prepareWaitReadable(rng.int(1, 10));
              r = 0;
              break;
            default:
              honest.prepareWaitWritable(rng.int(1, 10));
              r = 0;
              break;
          }
          if (r > 0 && op <= 1) dataSeen++;
          assert.equal(corrupt, false, 'corruption is latched: no success after a corrupt error');
        } catch (err) {
          if (!(err instanceof KvmchanError) || !ALLOWED.has(err.code)) throw err;
          if (err.code === 'KVMCHAN_E_CORRUPT') {
            corrupt = true;
            corruptSeen++;
          }
          if (err.code === 'KVMCHAN_E_CLOSED') break; // peer "closed": the vchan is over
        }
      }
      assert.equal(honest.peerState === 'closed' || !corrupt, true);
    }
    // The scenario must actually exercise both outcomes, or the test proves nothing.
    assert.ok(corruptSeen > 50, `corrupt errors seen: ${corruptSeen}`);
    assert.ok(dataSeen > 15, `successful reads seen: ${dataSeen}`);
  });
}

test('header mismatch is refused at setup', () => {
  const buf = new ArrayBuffer(regionLength({ c2sOrder: 10, s2cOrder: 10 }));
  initializeRegion(buf, 0, { c2sOrder: 10, s2cOrder: 10 });
  new DataView(buf).setUint8(8, 27); // peer claims a 128 MiB ring
  assert.throws(() => new RingEndpoint(buf, 0, { role: 'client', c2sOrder: 10, s2cOrder: 10 }, () => undefined), {
    code: 'KVMCHAN_E_CORRUPT',
  });
});
