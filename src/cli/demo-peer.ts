/**
 * The other process of `kvmchan demo` (internal): connects to the demo's vchan,
 * sinks the bulk transfer and answers with its byte count and SHA-256, then
 * echoes 64-byte packets for the round-trip measurement.
 * Usage: node demo-peer.js <runtimeDir> <port> <bytes> <pings> [serverDomain]
 */
import { createHash } from 'node:crypto';
import { Vchan } from '../client/index.js';

async function main(): Promise<void> {
  const [runtimeDir, portS, bytesS, pingsS, domainS] = process.argv.slice(2);
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
  hash.digest().copy(ack, 8);
  await v.send(ack);
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
