/**
 * The daemons' log lines as operators read them (docs/operations.md, "Logs"): every line is one
 * JSON object without duplicate keys (pino-pretty and jq keep only one of them, so a repeated
 * `component`, `name` or `pool` showed the wrong one) and with the level as a label. The scenario
 * touches every component that logs on a host with simulated guests: pools, ivshmem servers,
 * guest links, the local socket, the registry, both daemons at debug level.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { startGuests, startHost, type TestGuest } from '../helpers/guest-fixture.js';
import { teardown, type TestDaemon } from '../helpers/daemon-fixture.js';

let host: TestDaemon;
let guests: TestGuest[] = [];
before(async () => {
  host = await startHost({ guests: 2, guestPairs: 'all', logLevel: 'trace' });
  guests = await startGuests(host, 2, { logLevel: 'trace' });
});
after(() => teardown(...guests.map((g) => () => g.stop()), () => host?.stop()));

/** Top-level keys of one JSON object text, in order, duplicates kept (JSON.parse drops them). */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = c === '{' && depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

test('topLevelKeys sees a repeated key', () => {
  assert.deepEqual(topLevelKeys('{"a":1,"b":{"a":2,"c":"}\\","},"a":[{"x":1}]}'), ['a', 'b', 'a']);
});

test('log lines have no duplicate keys and a level label', async () => {
  // A vchan host↔guest 1 and guest 2↔guest 1: pools, ivshmem, guest links, registry, local.
  const server = await Vchan.listen({ runtimeDir: guests[0]!.runtimeDir, port: 9100, domain: 0, readMin: 4096, writeMin: 4096 });
  const client = await Vchan.connect({ runtimeDir: host.runtimeDir, port: 9100, domain: 1, timeout: 20_000 });
  await client.write(Buffer.from('hello'));
  assert.equal((await server.read())?.toString(), 'hello');
  const s2 = await Vchan.listen({ runtimeDir: guests[0]!.runtimeDir, port: 9101, domain: 2 });
  const c2 = await Vchan.connect({ runtimeDir: guests[1]!.runtimeDir, port: 9101, domain: 1, timeout: 20_000 });
  c2.close();
  s2.close();
  client.close();
  server.close();
  await guests[1]!.stop();
  guests = guests.slice(0, 1);

  const labels = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);
  let lines = 0;
  const problems: string[] = [];
  for (const [who, text] of [
    ['host', host.log()],
    ['guest 1', guests[0]!.log()],
  ] as const) {
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      lines++;
      const keys = topLevelKeys(line);
      const dup = keys.filter((k, i) => keys.indexOf(k) !== i);
      if (dup.length > 0) problems.push(`${who}: duplicate keys ${dup.join(', ')} in ${line}`);
      const level = (JSON.parse(line) as { level: unknown }).level;
      if (typeof level !== 'string' || !labels.has(level)) problems.push(`${who}: level ${String(level)} is not a label in ${line}`);
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(lines > 20, `only ${lines} log lines`);
});
