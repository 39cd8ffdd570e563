// Differential test of the two ring implementations (docs/ring-protocol.md): the same random
// operation sequences run through the TypeScript RingEndpoint and through the C ring
// (clib/src/ring.c, via the clib/test/ring_driver program); every result, every kick and
// every control-page field after every operation must agree.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { RingEndpoint, EOF } from '../../src/ring/endpoint.js';
import { FIELDS, initializeRegion, regionLength } from '../../src/ring/layout.js';
import { KvmchanError } from '../../src/errors.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { buildClibDrivers, testBinDir } from './build-clib.js';

const driver = path.join(testBinDir, 'ring_driver');

// Same order as the C driver prints them.
const FIELD_ORDER = [
  'c2s_prod',
  's2c_cons',
  'client_state',
  'c2s_wraps',
  's2c_prod',
  'c2s_cons',
  'server_state',
  's2c_wraps',
  'client_notify',
  'server_notify',
] as const;

function fnv32(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function outcome(err: unknown): string {
  if (!(err instanceof KvmchanError)) throw err;
  switch (err.code) {
    case 'KVMCHAN_E_CORRUPT':
      return 'corrupt';
    case 'KVMCHAN_E_CLOSED':
      return 'closed';
    case 'KVMCHAN_E_MSGSIZE':
      return 'msgsize';
    case 'KVMCHAN_E_INVALID_ARG':
      return 'invalid';
    default:
      throw err;
  }
}

/** The TypeScript side: interprets the driver's input language with RingEndpoint. */
class TsModel {
  #buf = new ArrayBuffer(0);
  #dv = new DataView(this.#buf);
  #server: RingEndpoint | undefined;
  #client: RingEndpoint | undefined;
  #kToServer = 0;
  #kToClient = 0;

  run(line: string): string {
    const w = line.split(' ');
    if (w[0] === 'new') {
      const c2sOrder = Number(w[1]);
      const s2cOrder = Number(w[2]);
      const start = Number(w[3]) | 0;
      this.#buf = new ArrayBuffer(regionLength({ c2sOrder, s2cOrder }));
      this.#dv = new DataView(this.#buf);
      initializeRegion(this.#buf, 0, { c2sOrder, s2cOrder });
      for (const f of ['c2s_prod', 's2c_cons', 's2c_prod', 'c2s_cons']) this.#dv.setUint32(FIELDS[f]!, start >>> 0, true);
      this.#kToServer = 0;
      this.#kToClient = 0;
      const init = { readCons: start, writeProd: start };
      this.#server = new RingEndpoint(
        this.#buf,
        0,
        { role: 'server', c2sOrder, s2cOrder },
        () => {
          this.#kToClient++;
        },
        init,
      );
      this.#client = new RingEndpoint(
        this.#buf,
        0,
        { role: 'client', c2sOrder, s2cOrder },
        () => {
          this.#kToServer++;
        },
        init,
      );
      return 'new 0 0';
    }
    if (w[0] === 'poke') {
      this.#dv.setUint32(Number(w[1]), Number(w[2]) >>> 0, true);
      return 'poke';
    }
    const ep = w[0] === 's' ? this.#server! : this.#client!;
    const op = w[1]!;
    const arg = w[2] ?? '';
    let result: number | string = 0;
    let readBytes = new Uint8Array(0);
    try {
      switch (op) {
        case 'read':
        case 'recv': {
          const dst = new Uint8Array(Number(arg));
          result = op === 'read' ? ep.tryRead(dst) : ep.tryRecv(dst);
          if (result > 0) readBytes = dst.subarray(0, result);
          break;
        }
        case 'write':
        case 'send': {
          const src = arg === '-' ? new Uint8Array(0) : Buffer.from(arg, 'hex');
          result = op === 'write' ? ep.tryWrite(src) : ep.trySend(src);
          break;
        }
        case 'data_ready':
          result = ep.dataReady();
          break;
        case 'buffer_space':
          result = ep.bufferSpace();
          break;
        case 'peek_r':
          result = ep.peekReadable();
          break;
        case 'peek_w':
          result = ep.peekWritable();
          break;
        case 'pwr':
          result = ep.prepareWaitReadable(Number(arg)) ? 1 : 0;
          break;
        case 'pww':
          result = ep.prepareWaitWritable(Number(arg)) ? 1 : 0;
          break;
        case 'state': {
          const s = ep.peerState;
          result = s === 'closed' ? 0 : s === 'connected' ? 1 : 2;
          break;
        }
        case 'attach':
          ep.attach();
          break;
        case 'close':
          ep.close();
          break;
        default:
          throw new Error(`unknown op ${op}`);
      }
      if (result === EOF) result = 'eof';
    } catch (err) {
      result = outcome(err);
    }
    const fields = FIELD_ORDER.map((f) => this.#dv.getUint32(FIELDS[f]!, true).toString(16));
    const h = fnv32(readBytes).toString(16).padStart(8, '0');
    return `${result} ${h} ${this.#kToServer} ${this.#kToClient} ${fields.join(' ')}`;
  }
}

/** Random operation sequences, with occasional hostile pokes into the control page. */
function generate(seed: number, rounds: number, steps: number): string[] {
  const rng = new Prng(seed);
  const lines: string[] = [];
  const hex = (n: number): string => (n === 0 ? '-' : Buffer.from(rng.bytes(n)).toString('hex'));
  for (let round = 0; round < rounds; round++) {
    const c2s = rng.int(10, 12);
    const s2c = rng.int(10, 12);
    const start = rng.pick([0, 0xffffffff - rng.int(0, 5000), rng.next(), 0x7fffffff - rng.int(0, 3000)]);
    lines.push(`new ${c2s} ${s2c} ${start >>> 0}`);
    const hostile = round % 4 === 3;
    let attached = false;
    for (let step = 0; step < steps; step++) {
      const side = rng.next() % 2 === 0 ? 's' : 'c';
      const ring = 2 ** (side === 's' ? s2c : c2s);
      const n = rng.int(0, rng.pick([16, 300, 2500, 2 * ring + 1]));
      const k = rng.int(0, 99);
      if (!attached && (k < 5 || step === 20)) {
        lines.push('c attach');
        attached = true;
      } else if (k < 22) lines.push(`${side} write ${hex(n)}`);
      else if (k < 34) lines.push(`${side} send ${hex(n)}`);
      else if (k < 56) lines.push(`${side} read ${n}`);
      else if (k < 68) lines.push(`${side} recv ${n}`);
      else if (k < 74) lines.push(`${side} data_ready`);
      else if (k < 80) lines.push(`${side} buffer_space`);
      else if (k < 83) lines.push(`${side} peek_r`);
      else if (k < 86) lines.push(`${side} peek_w`);
      else if (k < 90) lines.push(`${side} pwr ${rng.int(0, 3000)}`);
      else if (k < 94) lines.push(`${side} pww ${rng.int(0, 3000)}`);
      else if (k < 98) lines.push(`${side} state`);
      else if (rng.int(0, 20) === 0) lines.push(`${side} close`);
      else if (hostile && rng.int(0, 5) === 0) {
        const off = rng.pick([64, 68, 72, 128, 132, 136, 192, 196]);
        const v = rng.pick([rng.next(), rng.int(0, 3), rng.int(0, 70000)]);
        lines.push(`poke ${off} ${v >>> 0}`);
      } else lines.push(`${side} state`);
    }
  }
  return lines;
}

before(() => {
  buildClibDrivers();
});

function compare(lines: string[], label: string): void {
  const run = spawnSync(driver, [], { input: lines.join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 30 });
  assert.equal(run.status, 0, `driver failed: ${run.stderr}`);
  const cOut = run.stdout.split('\n');
  const model = new TsModel();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const ts = model.run(line);
    if (ts !== cOut[i]) {
      const context = lines.slice(Math.max(0, i - 8), i + 1).map((l) => (l.length > 60 ? `${l.slice(0, 60)}…` : l));
      assert.fail(`${label}: line ${i} differs\n  op: ${context.join('\n      ')}\n  ts: ${ts}\n  c:  ${cOut[i]}`);
    }
  }
}

test('C ring and TS ring agree on random operation sequences', () => {
  const seed = seedFromEnv(0x5eed1234);
  compare(generate(seed, 40, 1500), `seed=${seed}`);
});

test('C ring and TS ring agree under a hostile peer and after close', () => {
  const seed = seedFromEnv(0xbadc0de) ^ 0x1234567;
  const lines = generate(seed, 24, 800);
  // Every round here is hostile-heavy: add explicit corruptions at the end of each round.
  const out: string[] = [];
  for (const l of lines) {
    if (l.startsWith('new ') && out.length > 0)
      out.push('poke 64 4294967295', 's read 10', 's data_ready', 'c close', 's state', 's read 5');
    out.push(l);
  }
  compare(out, `seed=${seed}`);
});
