/**
 * Child process of the two-process ring tests: fd 3 = region memfd, fd 4 = our
 * wait eventfd, fd 5 = the parent's (kick) eventfd. argv: role c2sOrder s2cOrder
 * sendBytes recvBytes seed. Prints a JSON PumpResult on stdout.
 */
import { native } from '../../src/native.js';
import { RingEndpoint } from '../../src/ring/endpoint.js';
import { AsyncRing } from '../../src/ring/async-ring.js';
import { EventFdWaiter } from '../../src/ring/eventfd-waiter.js';
import { regionLength } from '../../src/ring/layout.js';
import { pump } from './ring-pump.js';

const [role, c2s, s2c, sendBytes, recvBytes, seed] = process.argv.slice(2);
const g = { c2sOrder: Number(c2s), s2cOrder: Number(s2c) };
const mapping = native.mmap(3, regionLength(g), 0, true);
const waiter = new EventFdWaiter(4, 5);
const ep = new RingEndpoint(mapping, 0, { role: role === 'server' ? 'server' : 'client', ...g, bulkCopy: native.copyBytes }, waiter.kick);
if (role === 'client') ep.attach();
const ring = new AsyncRing(ep, waiter);
const result = await pump(ring, { sendBytes: Number(sendBytes), recvBytes: Number(recvBytes), seed: Number(seed) });
process.stdout.write(`${JSON.stringify(result)}\n`);
ep.close();
waiter.close();
native.munmap(mapping);
