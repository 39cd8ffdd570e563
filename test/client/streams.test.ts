/**
 * Streams and the TS API as Node users rely on them (docs/api.md): one Duplex per vchan, a
 * local close that ends it quietly, a peer close seen as 'end' then 'close', typed events and
 * error codes (checked by the compiler: the `@ts-expect-error` lines below fail the build if
 * the misspelt name compiles), `await using`, and createServer serving many clients.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { Vchan, createServer, type VchanServer } from '../../src/client/index.js';
import { KvmchanError, type KvmchanErrorCode } from '../../src/errors.js';
import { startDaemon, teardown, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';

let d: TestDaemon;
before(async () => {
  d = await startDaemon();
});
after(() => teardown(() => d?.stop()));

let nextPort = 3000;
async function pair(): Promise<{ server: Vchan; client: Vchan }> {
  const port = nextPort++;
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port });
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port, timeout: 5000 });
  await server.waitConnected({ timeout: 5000 });
  return { server, client };
}

/** A sink that records what reached it. */
function sink(): Writable & { bytes: number } {
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      w.bytes += chunk.length;
      cb();
    },
  }) as Writable & { bytes: number };
  w.bytes = 0;
  return w;
}

test('stream() returns the same Duplex every time', async () => {
  const { server, client } = await pair();
  try {
    assert.equal(client.stream(), client.stream());
  } finally {
    client.close();
    server.close();
  }
});

test('the README client pattern: pipe, then close() — the stream ends quietly, no error', async () => {
  const { server, client } = await pair();
  const errors: unknown[] = [];
  const out = sink();
  const s = client.stream();
  s.on('error', (err) => errors.push(err));
  s.pipe(out);
  await server.write(Buffer.from('hello'));
  await waitFor(() => out.bytes === 5, 5000, 'piped bytes');
  // A read is pending in the stream's pump while we close: it must not surface as 'error'.
  const closed = new Promise<void>((resolve) => s.once('close', resolve));
  client.close();
  await within(closed, 5000, "the Duplex's 'close'");
  assert.deepEqual(errors, []);
  assert.equal(s.destroyed, true);
  server.close();
});

test('the README pattern without any error listener does not crash the process', async () => {
  // An unhandled 'error' on the Duplex would be an uncaught exception here.
  const { server, client } = await pair();
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => {
    uncaught.push(err);
  };
  process.on('uncaughtException', onUncaught);
  try {
    const s = client.stream();
    s.pipe(sink());
    const closed = new Promise<void>((resolve) => s.once('close', resolve));
    client.close();
    await within(closed, 5000, "the Duplex's 'close'");
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(uncaught, []);
  } finally {
    process.off('uncaughtException', onUncaught);
    server.close();
  }
});

test("a peer close: the readable side drains and emits 'end', then 'close'; the vchan closes", async () => {
  const { server, client } = await pair();
  const s = client.stream();
  const events: string[] = [];
  s.on('end', () => events.push('end'));
  s.on('close', () => events.push('close'));
  s.on('error', (err) => events.push(`error ${String(err)}`));
  const out = sink();
  s.pipe(out);
  await server.write(Buffer.alloc(3000, 7));
  server.close();
  await waitFor(() => events.includes('close'), 5000, "'close' after the peer closed");
  assert.deepEqual(events, ['end', 'close']);
  assert.equal(out.bytes, 3000, 'everything the peer sent before closing is delivered');
  assert.equal(client.state, 'closed');
});

test('typed events and error codes (compile-time checks), and await using', async () => {
  const port = nextPort++;
  let held: Vchan | undefined;
  {
    await using v = await Vchan.listen({ runtimeDir: d.runtimeDir, port });
    held = v;
    v.on('close', () => {});
    // @ts-expect-error: a misspelt event name does not compile
    v.on('clsoe', () => {});
    // @ts-expect-error: 'error' listeners take a KvmchanError, not a number
    v.on('error', (x: number) => x);
    assert.equal(v.state, 'waiting');
  }
  assert.equal(held.state, 'closed', 'await using closed the vchan at the end of its scope');
  const err = new KvmchanError('x', 'KVMCHAN_E_CLOSED');
  const code: KvmchanErrorCode = err.code;
  // @ts-expect-error: a code that does not exist does not compile
  const bad: KvmchanErrorCode = 'KVMCHAN_E_CLOSD';
  assert.equal(code, 'KVMCHAN_E_CLOSED');
  assert.equal(typeof bad, 'string');
});

async function echo(vchan: Vchan): Promise<void> {
  try {
    for await (const chunk of vchan) await vchan.write(chunk);
  } catch (err) {
    // The test closes leftover vchans while their echo may still wait: that ends it too.
    if (!(err instanceof KvmchanError && err.code === 'KVMCHAN_E_CLOSED')) throw err;
  } finally {
    vchan.close();
  }
}

async function roundTrip(port: number, text: string): Promise<string> {
  const c = await Vchan.connect({ runtimeDir: d.runtimeDir, port, timeout: 10000 });
  try {
    await c.write(Buffer.from(text));
    const got = await c.recv(text.length);
    return got?.toString() ?? '(closed)';
  } finally {
    c.close();
  }
}

test('createServer serves clients one after another and concurrently on one port', async () => {
  const port = nextPort++;
  const handed: Vchan[] = [];
  let server: VchanServer | undefined;
  try {
    server = await createServer({ runtimeDir: d.runtimeDir, port }, (v) => {
      handed.push(v);
      void echo(v);
    });
    for (let i = 0; i < 3; i++) assert.equal(await roundTrip(port, `serial ${i}`), `serial ${i}`);
    const texts = Array.from({ length: 8 }, (_, i) => `concurrent client ${i}`);
    const got = await within(Promise.all(texts.map((t) => roundTrip(port, t))), 30000, 'concurrent clients');
    assert.deepEqual(got, texts);
    assert.equal(server.connections, 11);
    assert.equal(new Set(handed).size, 11, 'one vchan per client');
  } finally {
    server?.close();
    for (const v of handed) v.close();
  }
  // After close() the port is free again for anyone.
  const again = await Vchan.listen({ runtimeDir: d.runtimeDir, port });
  again.close();
});

test('createServer rejects when the port is served already; close() is idempotent', async () => {
  const port = nextPort++;
  const s = await createServer({ runtimeDir: d.runtimeDir, port });
  try {
    await assert.rejects(createServer({ runtimeDir: d.runtimeDir, port }), { code: 'KVMCHAN_E_DAEMON_EEXIST' });
  } finally {
    s.close();
    s.close();
  }
  assert.equal(s.listening, false);
});
