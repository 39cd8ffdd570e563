// The libvirt remote-protocol codec and client (src/daemon/vmm/libvirt/) against byte fixtures
// and a fake libvirtd speaking the same framing: calls matched by serial, typed error replies,
// events, keepalive, timeouts, and hostile input (bad lengths, truncated payloads, unknown
// programs, replies to no call) ending the connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { LibvirtClient } from '../../src/daemon/vmm/libvirt/client.js';
import {
  FrameDecoder,
  LibvirtCallError,
  LibvirtProtocolError,
  Proc,
  decodeDeviceRemovedMsg,
  decodeError,
  decodeLifecycleMsg,
  decodeListAllDomainsRet,
  encodeAttachDeviceFlagsArgs,
  encodeCall,
  encodeOpenArgs,
  encodeRegisterAnyArgs,
  uuidBytes,
  uuidString,
} from '../../src/daemon/vmm/libvirt/codec.js';
import { TimeoutError } from '../../src/errors.js';
import { FakeLibvirt, frame, xdrDomain, xdrError, xdrString, xdrU32 } from './fake-libvirt.js';

const UUID = '0123456789abcdef0123456789abcdef';
let dir = '';
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-libvirt-'));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function withFake(fn: (f: FakeLibvirt, c: LibvirtClient) => Promise<void>): Promise<void> {
  const f = await FakeLibvirt.start(path.join(dir, 'libvirt-sock'));
  const c = await LibvirtClient.connect(f.path, { callTimeoutMs: 2000 });
  try {
    await fn(f, c);
  } finally {
    c.destroy();
    await f.close();
  }
}

test('byte fixture: CONNECT_OPEN call for qemu:///system', () => {
  const b = encodeCall(Proc.CONNECT_OPEN, 1, encodeOpenArgs('qemu:///system'));
  assert.equal(
    b.toString('hex'),
    [
      '00000038', // length 56 (this word included)
      '20008086',
      '00000001',
      '00000001',
      '00000000',
      '00000001',
      '00000000', // program, version, proc 1, CALL, serial 1, OK
      '00000001',
      '0000000e',
      Buffer.from('qemu:///system').toString('hex'),
      '0000', // non-null string, 14 bytes + 2 pad
      '00000000', // flags
    ].join(''),
  );
});

test('byte fixture: attach-device-flags and register-any arguments', () => {
  const dom = { name: 'vm1', uuid: Buffer.from(UUID, 'hex'), id: 7 };
  assert.equal(
    encodeAttachDeviceFlagsArgs(dom, '<x/>', 1).toString('hex'),
    `00000003${Buffer.from('vm1').toString('hex')}00${UUID}00000007` + `00000004${Buffer.from('<x/>').toString('hex')}` + '00000001',
  );
  assert.equal(encodeRegisterAnyArgs(15, null).toString('hex'), '0000000f00000000');
});

test('byte fixtures: list, lifecycle and device-removed decode', () => {
  const list = Buffer.concat([xdrU32(2), xdrDomain('a', UUID, 1), xdrDomain('bb', UUID, -1), xdrU32(2)]);
  const ds = decodeListAllDomainsRet(list);
  assert.deepEqual(
    ds.map((d) => [d.name, d.id, uuidString(d.uuid)]),
    [
      ['a', 1, '01234567-89ab-cdef-0123-456789abcdef'],
      ['bb', -1, '01234567-89ab-cdef-0123-456789abcdef'],
    ],
  );
  const lc = decodeLifecycleMsg(Buffer.concat([xdrU32(3), xdrDomain('a', UUID, 1), xdrU32(5), xdrU32(1)]));
  assert.deepEqual([lc.callbackId, lc.dom.name, lc.event, lc.detail], [3, 'a', 5, 1]);
  const dr = decodeDeviceRemovedMsg(Buffer.concat([xdrU32(4), xdrDomain('a', UUID, 1), xdrString('shmem0')]));
  assert.equal(dr.alias, 'shmem0');
  assert.deepEqual(uuidBytes(uuidString(Buffer.from(UUID, 'hex'))), Buffer.from(UUID, 'hex'));
});

test('decoders refuse truncated, over-long, trailing and badly padded input', () => {
  assert.throws(() => decodeListAllDomainsRet(xdrU32(1)), LibvirtProtocolError);
  assert.throws(() => decodeListAllDomainsRet(Buffer.concat([xdrU32(100000), xdrU32(0)])), /exceed/);
  assert.throws(() => decodeListAllDomainsRet(Buffer.concat([xdrU32(0), xdrU32(0), xdrU32(0)])), /trailing/);
  const badPad = Buffer.concat([xdrU32(1), xdrU32(1), Buffer.from([0x61, 1, 0, 0]), Buffer.from(UUID, 'hex'), xdrU32(1), xdrU32(1)]);
  assert.throws(() => decodeListAllDomainsRet(badPad), /padding/);
  assert.throws(() => decodeError(Buffer.concat([xdrU32(1), xdrU32(2), xdrU32(2)])), /boolean/);
  const e = decodeError(xdrError(42, 'Domain not found'));
  assert.deepEqual([e.code, e.message], [42, 'Domain not found']);
});

test('frame decoder splits coalesced and fragmented messages and bounds lengths', () => {
  const d = new FrameDecoder();
  const two = Buffer.concat([frame(0x20008086, 1, 1, 1, 0), frame(0x20008086, 2, 1, 2, 0, xdrU32(9))]);
  assert.equal(d.push(two.subarray(0, 30)).length, 1);
  const rest = d.push(two.subarray(30));
  assert.equal(rest.length, 1);
  assert.equal(rest[0]!.payload.readUInt32BE(0), 9);
  assert.throws(() => new FrameDecoder().push(xdrU32(8)), /shorter/);
  assert.throws(() => new FrameDecoder().push(xdrU32(0x7fffffff)), /exceeds/);
});

test('calls are matched by serial; replies out of order resolve the right call', () =>
  withFake(async (f, c) => {
    const held: { serial: number; procedure: number }[] = [];
    f.onCall = (call) => {
      if (call.procedure === Proc.DOMAIN_GET_XML_DESC) {
        held.push(call);
        if (held.length === 2) {
          // answer the second first
          f.sendRaw(frame(0x20008086, call.procedure, 1, held[1]!.serial, 0, xdrString('<second/>')));
          f.sendRaw(frame(0x20008086, call.procedure, 1, held[0]!.serial, 0, xdrString('<first/>')));
        }
        return 'silent';
      }
      return { ok: Buffer.alloc(0) };
    };
    await c.open('qemu:///system');
    const dom = { name: 'a', uuid: Buffer.from(UUID, 'hex'), id: 1 };
    const [a, b] = await Promise.all([c.domainXml(dom), c.domainXml(dom)]);
    assert.deepEqual([a, b], ['<first/>', '<second/>']);
    assert.equal(new Set(f.calls.map((x) => x.serial)).size, f.calls.length);
  }));

test('an error reply is a LibvirtCallError with libvirt code and message; the connection stays', () =>
  withFake(async (f, c) => {
    f.onCall = (call) =>
      call.procedure === Proc.DOMAIN_LOOKUP_BY_UUID
        ? { error: xdrError(42, 'Domain not found: no domain with matching uuid') }
        : { ok: xdrDomain('a', UUID, 3) };
    await assert.rejects(
      c.lookupByUuid(Buffer.from(UUID, 'hex')),
      (e: unknown) => e instanceof LibvirtCallError && e.libvirtCode === 42 && /Domain not found/.test(e.message),
    );
    assert.equal(c.closed, false);
  }));

test('events are decoded; keepalive pings are answered; other events ignored', () =>
  withFake(async (f, c) => {
    const got = once(c, 'lifecycle');
    f.sendEvent(319, xdrU32(0)); // a reboot event, never registered: ignored
    f.sendRaw(frame(0x6b656570, 1, 2, 0, 0));
    f.sendEvent(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, Buffer.concat([xdrU32(1), xdrDomain('vm', UUID, 4), xdrU32(2), xdrU32(0)]));
    const [msg] = (await got) as [{ dom: { name: string }; event: number }];
    assert.equal(msg.dom.name, 'vm');
    assert.equal(msg.event, 2);
    assert.equal(c.closed, false);
  }));

test('a call times out; its late reply is dropped without ending the connection', () =>
  withFake(async (f, c) => {
    let first: number | undefined;
    f.onCall = (call) => {
      if (first === undefined) {
        first = call.serial;
        return 'silent';
      }
      return { ok: Buffer.alloc(0) };
    };
    await assert.rejects(c.call(Proc.CONNECT_OPEN, encodeOpenArgs(null), 50), TimeoutError);
    f.sendRaw(frame(0x20008086, Proc.CONNECT_OPEN, 1, first!, 0));
    await c.open(null);
    assert.equal(c.closed, false);
  }));

for (const [what, bytes] of [
  ['an unknown program', frame(0x12345678, 1, 2, 0, 0)],
  ['a reply to no call', frame(0x20008086, 1, 1, 999, 0)],
  ['a length word shorter than a header', xdrU32(12)],
  ['a malformed event', frame(0x20008086, Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, 2, 0, 0, xdrU32(1))],
  ['a CALL from the server', frame(0x20008086, 1, 0, 0, 0)],
] as const) {
  test(`hostile: ${what} ends the connection and rejects pending calls`, () =>
    withFake(async (f, c) => {
      f.onCall = () => 'silent';
      const pending = c.domainXml({ name: 'a', uuid: Buffer.from(UUID, 'hex'), id: 1 });
      const closed = once(c, 'close');
      f.sendRaw(bytes);
      const [reason] = (await closed) as [LibvirtProtocolError];
      assert.ok(reason instanceof LibvirtProtocolError);
      await assert.rejects(pending, LibvirtProtocolError);
      assert.equal(c.closed, true);
    }));
}

test('libvirtd going away rejects pending calls with KVMCHAN_E_LIBVIRT_CLOSED', () =>
  withFake(async (f, c) => {
    f.onCall = () => 'silent';
    const pending = c.listActiveDomains();
    await new Promise((r) => setTimeout(r, 20));
    f.dropClients();
    await assert.rejects(pending, (e: unknown) => (e as LibvirtProtocolError).code === 'KVMCHAN_E_LIBVIRT_CLOSED');
  }));

test('authentication: none needs nothing more; polkit is asked for; SASL-only is refused', () =>
  withFake(async (f, c) => {
    let types = [0];
    f.onCall = (call) => {
      if (call.procedure === Proc.AUTH_LIST) return { ok: Buffer.concat([xdrU32(types.length), ...types.map((t) => xdrU32(t))]) };
      if (call.procedure === Proc.AUTH_POLKIT) return { ok: xdrU32(1) };
      return { ok: Buffer.alloc(0) };
    };
    await c.authenticate();
    assert.deepEqual(
      f.calls.map((x) => x.procedure),
      [Proc.AUTH_LIST],
    );
    types = [2];
    await c.authenticate();
    assert.deepEqual(f.calls.map((x) => x.procedure).slice(1), [Proc.AUTH_LIST, Proc.AUTH_POLKIT]);
    types = [1];
    await assert.rejects(c.authenticate(), (e: unknown) => (e as LibvirtProtocolError).code === 'KVMCHAN_E_LIBVIRT_AUTH');
  }));
