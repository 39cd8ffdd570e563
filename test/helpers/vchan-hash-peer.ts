/**
 * One end of a full-duplex vchan transfer for the VM tier: sends `bytes` bytes of a seeded
 * pattern while receiving as many from the other end, then prints one JSON line with the
 * SHA-256 of both directions and the time taken. Runs on the host or in a guest.
 *
 *   node vchan-hash-peer.js server <runtimeDir> <peerDomain> <port> <bytes>
 *   node vchan-hash-peer.js client <runtimeDir> <serverDomain> <port> <bytes>
 */
import { createHash } from 'node:crypto';
import { Vchan } from '../../src/client/index.js';
import { Pattern, PATTERN_PERIOD } from './pattern.js';

const CHUNK = 32 * 1024;

async function main(): Promise<void> {
  const [role, runtimeDir, domainArg, portArg, bytesArg] = process.argv.slice(2);
  if ((role !== 'server' && role !== 'client') || runtimeDir === undefined || bytesArg === undefined) {
    process.stderr.write('usage: vchan-hash-peer server|client <runtimeDir> <domain> <port> <bytes>\n');
    process.exit(2);
  }
  const domain = Number(domainArg);
  const port = Number(portArg);
  const bytes = Number(bytesArg);
  const v =
    role === 'server'
      ? await Vchan.listen({ runtimeDir, domain, port, readMin: 256 * 1024, writeMin: 256 * 1024 })
      : await Vchan.connect({ runtimeDir, domain, port, timeout: 120_000 });
  process.stdout.write(`READY ${JSON.stringify({ role, local: v.localDomain, peer: v.peerDomain })}\n`);
  await v.waitConnected();
  const out = new Pattern(role === 'server' ? 1 : 2);
  const sent = createHash('sha256');
  const received = createHash('sha256');
  const t0 = performance.now();
  const writing = (async () => {
    for (let pos = 0; pos < bytes;) {
      const n = Math.min(CHUNK, bytes - pos, PATTERN_PERIOD);
      const chunk = out.slice(pos, n);
      sent.update(chunk);
      await v.write(chunk);
      pos += n;
    }
  })();
  let got = 0;
  while (got < bytes) {
    const b = await v.read(Math.min(256 * 1024, bytes - got));
    if (b === null) throw new Error(`EOF after ${got} bytes`);
    received.update(b);
    got += b.length;
  }
  await writing;
  const ms = performance.now() - t0;
  // Both directions are done on this side; wait for the peer to finish reading before closing.
  v.close();
  process.stdout.write(`DONE ${JSON.stringify({ role, bytes, sent: sent.digest('hex'), received: received.digest('hex'), ms })}\n`);
}

main().catch((err: unknown) => {
  process.stdout.write(`FAILED ${JSON.stringify({ error: String(err), code: (err as { code?: string }).code })}\n`);
  process.exitCode = 1;
});
