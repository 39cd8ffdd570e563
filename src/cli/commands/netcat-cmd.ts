/** `kvmchan listen` and `kvmchan connect`: netcat over a vchan. */
import type { Command } from 'commander';
import { Vchan } from '../../client/index.js';
import { netcat } from '../netcat.js';
import { parseDomain, parseInteger, parsePort } from '../args.js';

interface CommonOpts {
  runtimeDir?: string;
  closeOnEof?: boolean;
  verbose?: boolean;
}

function report(verbose: boolean | undefined, msg: string): void {
  if (verbose === true) process.stderr.write(`kvmchan: ${msg}\n`);
}

export function registerNetcat(program: Command): void {
  program
    .command('listen')
    .description('serve a vchan on PORT toward DOMAIN and copy stdin to it and it to stdout')
    .argument('<port>', 'vchan port (u32)', parsePort)
    .option('-d, --domain <domain>', 'peer domain allowed to connect (id or name)', parseDomain, 0)
    .option('--read-min <bytes>', 'minimum size of the ring we read', (v) => parseInteger(v, 'read-min'), 65536)
    .option('--write-min <bytes>', 'minimum size of the ring we write', (v) => parseInteger(v, 'write-min'), 65536)
    .option('-N, --close-on-eof', 'close the vchan when stdin ends (the peer then sees end of stream)')
    .option('-t, --timeout <ms>', 'give up if no client connects in time', (v) => parseInteger(v, 'timeout'))
    .option('-v, --verbose', 'report progress on stderr')
    .action(async (port: number, opts: CommonOpts & { domain: number | string; readMin: number; writeMin: number; timeout?: number }) => {
      const vchan = await Vchan.listen({
        port,
        domain: opts.domain,
        readMin: opts.readMin,
        writeMin: opts.writeMin,
        ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
      });
      vchan.ref();
      report(opts.verbose, `listening on port ${port} (rings ${vchan.readSize}/${vchan.writeSize} bytes)`);
      await vchan.waitConnected(opts.timeout === undefined ? {} : { timeout: opts.timeout });
      vchan.unref();
      report(opts.verbose, 'client connected');
      const r = await netcat(vchan, { input: process.stdin, output: process.stdout, closeOnEof: opts.closeOnEof === true });
      vchan.close();
      report(opts.verbose, `done: sent ${r.sent} bytes, received ${r.received} bytes`);
    });

  program
    .command('connect')
    .description('connect to the vchan served on PORT by DOMAIN and copy stdin to it and it to stdout')
    .argument('<port>', 'vchan port (u32)', parsePort)
    .option('-d, --domain <domain>', 'domain of the server (id or name)', parseDomain, 0)
    .option('-t, --timeout <ms>', 'how long to wait for the server to appear (default: forever)', (v) => parseInteger(v, 'timeout'))
    .option('-N, --close-on-eof', 'close the vchan when stdin ends (the peer then sees end of stream)')
    .option('-v, --verbose', 'report progress on stderr')
    .action(async (port: number, opts: CommonOpts & { domain: number | string; timeout?: number }) => {
      const vchan = await Vchan.connect({
        port,
        domain: opts.domain,
        ...(opts.timeout === undefined ? {} : { timeout: opts.timeout }),
        ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
      });
      report(opts.verbose, `connected to port ${port} of domain ${opts.domain}`);
      const r = await netcat(vchan, { input: process.stdin, output: process.stdout, closeOnEof: opts.closeOnEof === true });
      vchan.close();
      report(opts.verbose, `done: sent ${r.sent} bytes, received ${r.received} bytes`);
    });
}
