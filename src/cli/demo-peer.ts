/**
 * The other process of `kvmchan demo` (internal): connects to the demo's vchan,
 * sinks the bulk transfer and answers with its byte count and SHA-256, then
 * echoes 64-byte packets for the round-trip measurement.
 * With [backBytes] (`kvmchan demo --vm`, where this runs in the guest) it then sends that many
 * random bytes back followed by their SHA-256, and prints what it received and sent, with the
 * hashes, on stdout as `guest: ...` lines.
 * Usage: node demo-peer.js <runtimeDir> <port> <bytes> <pings> [serverDomain [backBytes]]
 */
import { createHash, randomFillSync } from 'node:crypto';
import { Vchan } from '../client/index.js';

async function main(): Promise<void> {
  const [runtimeDir, portS, bytesS, pingsS, domainS, backS] = process.argv.slice(2);
  if (runtimeDir === undefined || portS === undefined || bytesS === undefined || pingsS === undefined) {
    throw new Error('usage: demo-peer <runtimeDir> <port> <bytes> <pings>');
  }
  const total = Number(bytesS);
  const pings = Number(pingsS);
  const v = await Vchan.connect({ runtimeDir, port: Number(portS), domain: Number(domainS ?? '0'), timeout: 10000 });
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(256 * 1024);
  let got = 0;
  while (got < total) {
    const n = await v.readInto(buf.subarray(0, Math.min(buf.length, total - got)));
    if (n < 0) throw new Error('demo: stream ended early');
    hash.update(buf.subarray(0, n));
    got += n;
  }
  const ack = Buffer.alloc(40);
  ack.writeDoubleLE(got, 0);
  const digest = hash.digest();
  digest.copy(ack, 8);
  if (backS !== undefined) process.stdout.write(`guest: received ${got} bytes, SHA-256 ${digest.toString('hex')}\n`);
  await v.send(ack);
  if (backS !== undefined) {
    const back = Number(backS);
    const out = createHash('sha256');
    const chunk = Buffer.allocUnsafe(64 * 1024);
    for (let sent = 0; sent < back;) {
      randomFillSync(chunk);
      const piece = chunk.subarray(0, Math.min(chunk.length, back - sent));
      out.update(piece);
      await v.write(piece);
      sent += piece.length;
    }
    const d = out.digest();
    const trailer = Buffer.alloc(40);
    trailer.writeDoubleLE(back, 0);
    d.copy(trailer, 8);
    await v.send(trailer);
    process.stdout.write(`guest: sent ${back} bytes, SHA-256 ${d.toString('hex')}\n`);
  }
  const pkt = Buffer.alloc(64);
  for (let i = 0; i < pings; i++) {
    if ((await v.recvInto(pkt)) < 0) break;
    await v.send(pkt);
  }
  v.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`demo-peer: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
