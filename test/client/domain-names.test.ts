// Domains by name (docs/api.md, "Domains by name"): `domain` may be the name `kvmchan status`
// shows, resolved through the daemon's domain list; unknown names fail with a typed error.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { InvalidArgumentError, UnknownDomainError } from '../../src/errors.js';
import { teardown, type TestDaemon } from '../helpers/daemon-fixture.js';
import { startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';
import { fetchStatus } from '../../src/cli/commands/status.js';

let d: TestDaemon;
let g: TestGuest;
before(async () => {
  d = await startHost({ guests: 2 });
  g = await startGuest(d, 2);
});
after(() =>
  teardown(
    () => g?.stop(),
    () => d?.stop(),
  ),
);

test('a vchan toward a domain named as kvmchan status names it goes to that domain', async () => {
  const st = await fetchStatus(d.runtimeDir);
  const guest = st.domains.find((x) => x.domain === 2);
  assert.ok(guest !== undefined, `domain 2 listed: ${JSON.stringify(st.domains)}`);
  const v = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 4100, domain: guest.name });
  try {
    const after = await fetchStatus(d.runtimeDir);
    const entry = after.vchans.find((x) => x.port === 4100);
    assert.equal(entry?.clientDomain, 2, `the vchan is toward domain 2 (${guest.name})`);
  } finally {
    v.close();
  }
});

test('the host by name, and a decimal string as an id, both reach the same server', async () => {
  const host = (await fetchStatus(d.runtimeDir)).domains.find((x) => x.domain === 0)!;
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port: 4101, domain: '0' });
  const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port: 4101, domain: host.name, timeout: 5000 });
  try {
    await server.waitConnected({ timeout: 5000 });
    await client.write(Buffer.from('hi'));
    assert.equal((await server.read(2))?.toString(), 'hi');
  } finally {
    client.close();
    server.close();
  }
});

test('an unknown name is a typed error; an empty one is invalid', async () => {
  await assert.rejects(Vchan.listen({ runtimeDir: d.runtimeDir, port: 4102, domain: 'no-such-vm' }), (e: unknown) => {
    assert.ok(e instanceof UnknownDomainError);
    assert.equal(e.code, 'KVMCHAN_E_UNKNOWN_DOMAIN');
    return true;
  });
  await assert.rejects(Vchan.connect({ runtimeDir: d.runtimeDir, port: 4102, domain: '', timeout: 0 }), InvalidArgumentError);
});
