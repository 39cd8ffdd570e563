// Bounded queues (docs/security.md, "Queues"): a client that pipelines requests and never reads
// the replies makes the daemon stop reading it, then cuts it off — its memory stays bounded, and
// everyone else is served meanwhile.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Command } from '../../src/protocol/constants.js';
import { encodeRequest } from '../../src/protocol/codec.js';
import { RawClient, expectFdsBackTo, rssKiB, settledFds, startDaemon, teardown, type TestDaemon } from '../helpers/daemon-fixture.js';
import { sleep, waitFor } from '../helpers/wait.js';

let d: TestDaemon;

before(async () => {
  d = await startDaemon({ config: { limits: { slowPeerTimeoutMs: 2000 } } });
});
after(() => teardown(() => d?.stop()));

test('60,000 pipelined LIST_VCHANS whose replies are never read: bounded memory, the reader is cut off', async () => {
  const fds0 = await settledFds(d.daemon.pid);
  const rss0 = rssKiB(d.daemon.pid);
  const attacker = new RawClient(d.runtimeDir);
  let sent = 0;
  try {
    // Send as fast as the daemon takes them; when it stops taking them for a while, it has
    // stopped reading us (before the fix it read all 60,000 and queued every reply).
    let stalledSince = 0;
    let dropped = false;
    while (sent < 60_000 && !dropped) {
      try {
        if (!attacker.send(encodeRequest(Command.LIST_VCHANS, sent + 1, { start: 0 }))) dropped = true;
        else {
          sent++;
          stalledSince = 0;
        }
      } catch (err) {
        if ((err as { code?: string }).code !== 'EAGAIN') throw err;
        if (stalledSince === 0) stalledSince = Date.now();
        else if (Date.now() - stalledSince > 1000) break;
        await sleep(1);
      }
    }
    await waitFor(() => d.log().includes('KVMCHAN_E_SLOW_PEER'), 20_000, 'the daemon to drop the client that does not read');
    const grown = rssKiB(d.daemon.pid) - rss0;
    console.log(`# sent ${sent} requests before our socket filled up; daemon RSS +${Math.round(grown / 1024)} MiB`);
    assert.ok(sent < 60_000, 'the daemon stopped reading the requests of a client that does not read replies');
    assert.ok(grown < 64 * 1024, `daemon RSS grew by ${grown} KiB`);
    // Meanwhile an honest client is answered.
    const honest = new RawClient(d.runtimeDir);
    try {
      assert.ok(honest.send(encodeRequest(Command.GET_VERSION, 1, {})));
      assert.equal((await honest.reply(5000)).err, 0);
    } finally {
      honest.close();
    }
  } finally {
    attacker.close();
  }
  await expectFdsBackTo(d.daemon.pid, fds0, 5000, 'the daemon to hold its fds from before the attack');
});
