/**
 * Wake-ups in the Xen call sequence through the TypeScript API (docs/clib.md, "Wake-ups"):
 * the server writes before its client exists, and a client whose first call is a wait finds
 * the data without sleeping; a server blocked on a full ring before any client attached is
 * released by the client's reads.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { startDaemon, teardown, within, type TestDaemon } from '../helpers/daemon-fixture.js';

let d: TestDaemon;
before(async () => {
  d = await startDaemon();
});
after(() => teardown(() => d?.stop()));

const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 131 + 7) & 0xff));

test('a client that starts by waiting finds data written before it attached', async () => {
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7100, readMin: 1024, writeMin: 1024 });
  const early = bytes(100);
  await server.write(early);
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 7100, domain: 0 });
  try {
    await within(client.waitReadable(), 10_000, 'waitReadable after the data arrived');
    const got = await client.read();
    assert.deepEqual(got, early);
  } finally {
    client.close();
    server.close();
  }
});

test('a server blocked on a full ring before any client is drained by the client', async () => {
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 7101, readMin: 1024, writeMin: 1024 });
  const data = bytes(4096);
  const writing = server.write(data); // fills the 1 KiB ring, then waits for room
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 7101, domain: 0 });
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    while (total < data.length) {
      await within(client.waitReadable(), 10_000, `waitReadable at ${total} bytes`);
      const chunk = await client.read();
      assert.notEqual(chunk, null);
      chunks.push(chunk!);
      total += chunk!.length;
    }
    await within(writing, 10_000, 'the server write completes');
    assert.deepEqual(Buffer.concat(chunks), data);
  } finally {
    client.close();
    server.close();
  }
});
