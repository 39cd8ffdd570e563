/**
 * The second process of every benchmark. argv: transport (ring|vchan|net)
 * script, where script is a JSON list of steps the parent runs in the same order:
 *   {"sink": bytes}  read bytes, then write a 1-byte ack
 *   {"echo": n, "size": s, "spin": k}  echo n messages of s bytes
 *   {"accept": n, "base": port}  (vchan only) connect to ports base..base+n-1 one after another
 * ring: fds 3/4/5 = memfd, our wait eventfd, parent's eventfd; argv[4] = order.
 * vchan: argv[4] = runtime dir, argv[5] = port.  net: argv[4] = socket path.
 * tcp-listen (in a VM guest, bench/vm.ts): argv[4] = TCP port to listen on; the first connection
 *   is the channel; with an accept step, each of n + 1 connections (the first one a warm-up)
 *   gets one byte and is closed.
 */
import net from 'node:net';
import { once } from 'node:events';
import { native } from '../src/native.js';
import { regionLength } from '../src/ring/layout.js';
import { Vchan } from '../src/client/index.js';
import { ringChan, vchanChan, netChan, readBulk, readExact, writeExact, type Chan } from './channels.js';

type Step = { sink: number } | { echo: number; size: number } | { accept: number; base: number };

const [transport, scriptJson, a, b] = process.argv.slice(2);
const script = JSON.parse(scriptJson ?? '[]') as Step[];

async function open(spin: number): Promise<Chan> {
  if (transport === 'ring') {
    const order = Number(a);
    const mapping = native.mmap(3, regionLength({ c2sOrder: order, s2cOrder: order }), 0, true);
    return ringChan(mapping, 'client', order, 4, 5, spin);
  }
  if (transport === 'vchan') {
    return vchanChan(await Vchan.connect({ runtimeDir: a!, port: Number(b), spin }));
  }
  if (transport === 'tcp-listen') {
    const server = net.createServer().listen(Number(a), '0.0.0.0');
    const [sock] = (await once(server, 'connection')) as [net.Socket];
    server.close();
    sock.setNoDelay(true);
    return netChan(sock);
  }
  const sock = net.connect(a!);
  await once(sock, 'connect');
  sock.setNoDelay(true);
  return netChan(sock);
}

// If the harness dies (killed, crashed), do not linger waiting for it: exit once orphaned.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(3);
}, 500).unref();

// Test hook (test/bench/harness.test.ts): this transport's peer never attaches, so the
// harness must notice the stall and clean up.
if (process.env['KVMCHAN_BENCH_PEER_HANG'] === transport) {
  setInterval(() => undefined, 60_000);
  await new Promise(() => undefined);
}
const spinArg = Number(process.env['BENCH_SPIN'] ?? '100');
const ch = script.some((s) => 'accept' in s) ? null : await open(spinArg);
// Ready: nothing is timed until this process has started and attached.
if (ch !== null) await writeExact(ch, new Uint8Array(1));
for (const step of script) {
  if ('sink' in step) {
    await readBulk(ch!, step.sink);
    await writeExact(ch!, new Uint8Array(1));
  } else if ('echo' in step) {
    const m = new Uint8Array(step.size);
    for (let i = 0; i < step.echo; i++) {
      await readExact(ch!, m);
      await writeExact(ch!, m);
    }
  } else if (transport === 'tcp-listen') {
    const server = net.createServer({ noDelay: true }).listen(Number(a), '0.0.0.0');
    for (let i = 0; i <= step.accept; i++) {
      const [sock] = (await once(server, 'connection')) as [net.Socket];
      sock.end(Buffer.alloc(1));
    }
    server.close();
  } else {
    for (let i = 0; i < step.accept; i++) {
      const v = await Vchan.connect({ runtimeDir: a!, port: step.base + i, domain: 0 });
      v.close();
    }
  }
}
ch?.close();
