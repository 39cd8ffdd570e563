// The product QMP client (src/daemon/vmm/qmp/client.ts) against a fake QMP server: greeting and
// negotiation, one id per command, errors, timeouts, events, bounded lines, EOF, hostile input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QmpClient } from '../../src/daemon/vmm/qmp/client.js';
import { QmpCommandError, QmpError, TimeoutError } from '../../src/errors.js';
import { FakeQmpServer } from './fake-qmp.js';

let dir = '';
let fake: FakeQmpServer;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-qmp-'));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function withFake(fn: (f: FakeQmpServer) => Promise<void>): Promise<void> {
  fake = await FakeQmpServer.start(path.join(dir, 'qmp.sock'));
  try {
    await fn(fake);
  } finally {
    await fake.close();
  }
}

test('negotiates capabilities and runs commands with one id each', () =>
  withFake(async (f) => {
    f.onCommand = (cmd) => ({ echo: cmd.arguments ?? null, cmd: cmd.execute });
    const q = await QmpClient.connect(f.path);
    assert.deepEqual(q.version, { major: 7, minor: 2, micro: 22 });
    assert.equal(f.commands[0]!.execute, 'qmp_capabilities');
    const [a, b] = await Promise.all([q.execute('query-status'), q.execute('qom-list', { path: '/machine' })]);
    assert.deepEqual(a, { echo: null, cmd: 'query-status' });
    assert.deepEqual(b, { echo: { path: '/machine' }, cmd: 'qom-list' });
    const ids = f.commands.map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length, 'ids are unique');
    assert.ok(ids.every((i) => typeof i === 'string'));
    q.close();
    assert.equal(q.closed, true);
  }));

test('replies out of order are matched by id', () =>
  withFake(async (f) => {
    const held: { id: unknown; conn: { send: (o: unknown) => void } }[] = [];
    f.onCommand = (cmd, conn) => {
      held.push({ id: cmd.id, conn });
      if (held.length === 2) {
        conn.send({ return: 'second', id: held[1]!.id });
        conn.send({ return: 'first', id: held[0]!.id });
      }
      return undefined;
    };
    const q = await QmpClient.connect(f.path);
    assert.deepEqual(await Promise.all([q.execute('a'), q.execute('b')]), ['first', 'second']);
    q.close();
  }));

test('a QEMU error becomes QmpCommandError with its class', () =>
  withFake(async (f) => {
    f.onCommand = (cmd, conn) => {
      conn.send({ error: { class: 'GenericError', desc: 'Bus rp1 is full' }, id: cmd.id });
      return undefined;
    };
    const q = await QmpClient.connect(f.path);
    const err = await q.execute('device_add', { driver: 'x' }).catch((e: unknown) => e);
    assert.ok(err instanceof QmpCommandError);
    assert.equal(err.code, 'KVMCHAN_E_QMP_COMMAND');
    assert.equal(err.qmpClass, 'GenericError');
    assert.match(err.message, /Bus rp1 is full/);
    assert.equal(q.closed, false, 'a refused command keeps the connection');
    q.close();
  }));

test('timeouts: a command without a reply times out, its late reply is dropped, the connection lives', () =>
  withFake(async (f) => {
    let late: (() => void) | null = null;
    f.onCommand = (cmd, conn) => {
      if (cmd.execute === 'slow') {
        late = () => {
          conn.send({ return: 'too late', id: cmd.id });
        };
        return undefined;
      }
      return 'ok';
    };
    const q = await QmpClient.connect(f.path);
    await assert.rejects(q.execute('slow', undefined, 50), (e: unknown) => e instanceof TimeoutError && e.code === 'KVMCHAN_E_TIMEOUT');
    late!();
    assert.equal(await q.execute('fast'), 'ok');
    assert.equal(q.closed, false);
    q.close();
  }));

test('events are emitted and awaited; waitEvent times out', () =>
  withFake(async (f) => {
    const q = await QmpClient.connect(f.path);
    const seen: string[] = [];
    q.on('event', (e) => seen.push(e.event));
    const w = q.waitEvent('DEVICE_DELETED', 2000, (e) => e.data.device === 'x');
    f.connections[0]!.event('DEVICE_DELETED', { device: 'y' });
    f.connections[0]!.event('DEVICE_DELETED', { device: 'x' });
    const e = await w;
    assert.equal(e.data.device, 'x');
    assert.deepEqual(e.timestamp, { seconds: 1, microseconds: 2 });
    assert.deepEqual(seen, ['DEVICE_DELETED', 'DEVICE_DELETED']);
    await assert.rejects(q.waitEvent('NEVER', 30), TimeoutError);
    q.close();
  }));

test('EOF rejects pending commands and emits close once', () =>
  withFake(async (f) => {
    f.onCommand = () => undefined;
    const q = await QmpClient.connect(f.path);
    let closes = 0;
    q.on('close', () => closes++);
    const p = q.execute('hang');
    const w = q.waitEvent('SHUTDOWN', 5000);
    f.connections[0]!.sock.end();
    await assert.rejects(p, (e: unknown) => e instanceof QmpError && e.code === 'KVMCHAN_E_QMP_CLOSED');
    await assert.rejects(w, (e: unknown) => e instanceof QmpError && e.code === 'KVMCHAN_E_QMP_CLOSED');
    await assert.rejects(q.execute('after'), (e: unknown) => e instanceof QmpError && e.code === 'KVMCHAN_E_QMP_CLOSED');
    assert.equal(closes, 1);
  }));

test('lines are bounded: an over-long line ends the connection (split across chunks too)', () =>
  withFake(async (f) => {
    f.onCommand = () => undefined;
    const q = await QmpClient.connect(f.path, { maxLineBytes: 1024 });
    const why = new Promise<QmpError>((resolve) => q.once('close', resolve));
    const p = q.execute('x').catch((e: unknown) => e);
    const c = f.connections[0]!;
    c.raw('{"return": "');
    c.raw('a'.repeat(600));
    c.raw('a'.repeat(600));
    const err = await why;
    assert.equal(err.code, 'KVMCHAN_E_QMP_PROTOCOL');
    assert.match(err.message, /longer than 1024/);
    assert.ok((await p) instanceof QmpError);
  }));

test('a line split into many chunks is reassembled', () =>
  withFake(async (f) => {
    f.onCommand = (cmd, conn) => {
      const s = JSON.stringify({ return: { big: 'b'.repeat(3000) }, id: cmd.id }) + '\n';
      for (let i = 0; i < s.length; i += 7) conn.raw(s.slice(i, i + 7));
      return undefined;
    };
    const q = await QmpClient.connect(f.path);
    assert.deepEqual(await q.execute('x'), { big: 'b'.repeat(3000) });
    q.close();
  }));

for (const [name, bad] of [
  ['not JSON', 'this is not json\n'],
  ['a JSON array', '[1,2]\n'],
  ['a reply without id', '{"return": {}}\n'],
  ['a reply to an id never sent', '{"return": {}, "id": "nope"}\n'],
  ['an error without class/desc', '{"error": {}, "id": "kvmchan-2"}\n'],
  ['an event with non-object data', '{"event": "X", "data": 5}\n'],
] as const) {
  test(`hostile QEMU: ${name} ends the connection with KVMCHAN_E_QMP_PROTOCOL`, () =>
    withFake(async (f) => {
      f.onCommand = () => undefined;
      const q = await QmpClient.connect(f.path);
      const why = new Promise<QmpError>((resolve) => q.once('close', resolve));
      const p = q.execute('x').catch((e: unknown) => e);
      f.connections[0]!.raw(bad);
      assert.equal((await why).code, 'KVMCHAN_E_QMP_PROTOCOL');
      assert.ok((await p) instanceof Error);
    }));
}

test('connect: bad greeting, no greeting, nobody listening', async () => {
  await withFake(async (f) => {
    f.greeting = { QMP: { version: { qemu: { major: 'seven' } }, capabilities: [] } };
    await assert.rejects(QmpClient.connect(f.path), (e: unknown) => e instanceof QmpError && /version/.test(e.message));
  });
  await withFake(async (f) => {
    f.greeting = { hello: 1 };
    await assert.rejects(QmpClient.connect(f.path), (e: unknown) => e instanceof QmpError && e.code === 'KVMCHAN_E_QMP_PROTOCOL');
  });
  await withFake(async (f) => {
    f.greeting = null;
    await assert.rejects(
      QmpClient.connect(f.path, { connectTimeoutMs: 100 }),
      (e: unknown) => e instanceof QmpError && e.code === 'KVMCHAN_E_QMP_CONNECT' && /another client/.test(e.message),
    );
  });
  await assert.rejects(
    QmpClient.connect(path.join(dir, 'absent.sock')),
    (e: unknown) => e instanceof QmpError && e.code === 'KVMCHAN_E_QMP_CONNECT',
  );
});

test('too many commands in flight are refused', () =>
  withFake(async (f) => {
    f.onCommand = () => undefined;
    const q = await QmpClient.connect(f.path, { maxPending: 2 });
    const a = q.execute('a').catch(() => undefined);
    const b = q.execute('b').catch(() => undefined);
    await assert.rejects(q.execute('c'), (e: unknown) => e instanceof QmpError && e.code === 'KVMCHAN_E_QMP_BUSY');
    q.close();
    await Promise.all([a, b]);
  }));
