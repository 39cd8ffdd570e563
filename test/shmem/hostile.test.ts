// Hostile and unsupported uses of the shared-memory region commands (docs/shmem.md,
// wire-protocol.md §6.11): malformed requests are answered and the connection stays up; a
// client that asks for hundreds of regions, never reads a reply and exits leaks nothing in the
// daemon; refused requests with a guest on either side keep nothing either.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Shmem } from '../../src/client/index.js';
import { native } from '../../src/native.js';
import { Command, Errno } from '../../src/protocol/constants.js';
import { encodeRequest } from '../../src/protocol/codec.js';
import {
  RawClient,
  expectFdsBackTo,
  rawFrame,
  settledFds,
  teardown,
  words,
  type RawReply,
  type TestDaemon,
} from '../helpers/daemon-fixture.js';
import { startGuests, startHost, type TestGuest } from '../helpers/guest-fixture.js';

let host: TestDaemon;
let guests: TestGuest[] = [];

before(async () => {
  host = await startHost({ guests: 1 });
  guests = await startGuests(host, 1);
});

after(() => teardown(...guests.map((g) => () => g.stop()), () => host?.stop()));

function expectErr(r: RawReply, id: number, seq: number, errno: number): void {
  assert.equal(r.id, id, 'reply id');
  assert.equal(r.seq, seq, 'reply seq');
  assert.equal(r.err, -errno, `reply err for id 0x${id.toString(16)}`);
  assert.equal(r.fds.length, 0);
}

test('malformed SHM_* requests are refused, the connection carries on', async () => {
  const c = new RawClient(host.runtimeDir);
  try {
    let seq = 1;
    const ask = async (frame: Buffer): Promise<RawReply> => {
      assert.ok(c.send(frame));
      return c.reply();
    };
    let s = seq++;
    expectErr(await ask(rawFrame(Command.SHM_SHARE, s, words(0, 0))), Command.SHM_SHARE, s, Errno.EINVAL);
    s = seq++;
    expectErr(await ask(rawFrame(Command.SHM_SHARE, s, words(0, 262145))), Command.SHM_SHARE, s, Errno.EMSGSIZE);
    s = seq++;
    expectErr(await ask(rawFrame(Command.SHM_SHARE, s, words(0, 1, 0))), Command.SHM_SHARE, s, Errno.EINVAL);
    s = seq++;
    expectErr(await ask(rawFrame(Command.SHM_RELEASE, s, words(5, 1))), Command.SHM_RELEASE, s, Errno.EINVAL);
    s = seq++;
    expectErr(await ask(rawFrame(Command.SHM_UNMAP, s, words(0, 77))), Command.SHM_UNMAP, s, Errno.ENOENT);
    s = seq++;
    expectErr(await ask(rawFrame(Command.SHM_SHARE, s, words(9, 1))), Command.SHM_SHARE, s, Errno.ESRCH);
    // Still served, and a good request gets exactly one fd.
    s = seq++;
    const ok = await ask(encodeRequest(Command.SHM_SHARE, s, { domain: 0, pages: 3 }));
    assert.equal(ok.err, 0);
    assert.equal(ok.fds.length, 1);
    assert.equal(ok.data.readUInt32LE(16 + 12), 3, 'pages (after the header and {err, pad})');
    for (const fd of ok.fds) native.close(fd);
  } finally {
    c.close();
  }
});

test('hundreds of SHM_SHAREs whose replies are never read, then the client leaves: nothing leaks', async () => {
  const pid = host.daemon.child.pid!;
  const baseline = await settledFds(pid);
  const c = new RawClient(host.runtimeDir);
  let sent = 0;
  try {
    // Until the socket is full (the daemon stops reading at 64 requests in flight and 1 MiB of
    // unsent replies, docs/security.md "Queues"): EAGAIN ends the flood.
    for (; sent < 500; sent++) if (!c.send(encodeRequest(Command.SHM_SHARE, sent + 1, { domain: 0, pages: 16 }))) break;
  } catch (err) {
    if ((err as { code?: string }).code !== 'EAGAIN') throw err;
  }
  assert.ok(sent >= 64, `${sent} requests sent`);
  c.close();
  await expectFdsBackTo(pid, baseline, 10_000, 'the daemon fds after the greedy client left');
});

test('a guest on either side: refused shares and maps, from the host and from a guest daemon, keep nothing', async () => {
  const pid = host.daemon.child.pid!;
  const baseline = await settledFds(pid);
  const onHost = await Shmem.open({ runtimeDir: host.runtimeDir });
  const inGuest = await Shmem.open({ runtimeDir: guests[0]!.runtimeDir });
  try {
    await assert.rejects(onHost.share(7, 1), { code: 'KVMCHAN_E_DAEMON_ESRCH' });
    await assert.rejects(onHost.map(1, 1), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
    await assert.rejects(inGuest.share(1, 1), { code: 'KVMCHAN_E_DAEMON_EINVAL' });
    await assert.rejects(inGuest.share(7, 1), { code: 'KVMCHAN_E_DAEMON_ESRCH' });
    await assert.rejects(inGuest.map(0, 1), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
    await assert.rejects(inGuest.unmap({ domain: 0, id: 1 }), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
    await assert.rejects(inGuest.release(1), { code: 'KVMCHAN_E_DAEMON_ENOENT' });
  } finally {
    inGuest.close();
    onHost.close();
  }
  await expectFdsBackTo(pid, baseline, 5000, 'the daemon fds');
});
