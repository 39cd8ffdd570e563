/**
 * Guest side of the VM tier's "many vchans" test: listens for `count` vchans from `peerDomain`
 * on ports port..port+count-1 and echoes every byte back until the peer closes. Prints
 * `READY <count>` once every port is registered and `DONE {json}` when all have ended.
 *
 *   node echo-servers.js <runtimeDir> <peerDomain> <port> <count>
 */
import { Vchan } from '../../../src/client/index.js';

async function echo(v: Vchan): Promise<number> {
  await v.waitConnected();
  let n = 0;
  for (;;) {
    const b = await v.read(64 * 1024);
    if (b === null) break;
    await v.write(b);
    n += b.length;
  }
  v.close();
  return n;
}

async function main(): Promise<void> {
  const [runtimeDir, domainArg, portArg, countArg] = process.argv.slice(2);
  if (runtimeDir === undefined || countArg === undefined) {
    process.stderr.write('usage: echo-servers <runtimeDir> <peerDomain> <port> <count>\n');
    process.exit(2);
  }
  const domain = Number(domainArg);
  const port = Number(portArg);
  const count = Number(countArg);
  const vchans: Vchan[] = [];
  for (let i = 0; i < count; i++) {
    vchans.push(await Vchan.listen({ runtimeDir, domain, port: port + i, readMin: 4096, writeMin: 4096 }));
  }
  process.stdout.write(`READY ${count}\n`);
  const bytes = await Promise.all(vchans.map(echo));
  process.stdout.write(`DONE ${JSON.stringify({ count, bytes: bytes.reduce((a, b) => a + b, 0) })}\n`);
}

main().catch((err: unknown) => {
  process.stdout.write(`FAILED ${JSON.stringify({ error: String(err), code: (err as { code?: string }).code })}\n`);
  process.exitCode = 1;
});
