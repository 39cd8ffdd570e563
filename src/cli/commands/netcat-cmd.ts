/** `kvmchan listen` and `kvmchan connect`: netcat over a vchan. */
import fs from 'node:fs';
import type { Command } from 'commander';
import { Vchan } from '../../client/index.js';
import { DaemonError } from '../../errors.js';
import { netcat, type NetcatResult } from '../netcat.js';
import { parseDomain, parsePort } from '../args.js';
import { ExitError } from '../conventions.js';
import { durationOption, sizeOption } from '../options.js';

interface CommonOpts {
  runtimeDir?: string;
  closeOnEof?: boolean;
  verbose?: boolean;
}

function report(verbose: boolean | undefined, msg: string): void {
  if (verbose === true) process.stderr.write(`kvmchan: ${msg}\n`);
}

/** What is left of stdin when it is a regular file (else unknowable without reading it). */
function unreadStdin(consumed: number): number {
  try {
    const st = fs.fstatSync(0);
    return st.isFile() ? Math.max(0, st.size - consumed) : 0;
  } catch {
    return 0;
  }
}

/**
 * The peer closing before our stdin ended is a truncation, not a success (docs/cli.md): say
 * how much was not delivered and fail. An interactive stdin (a terminal) that was simply not
 * ended is not data lost.
 */
function finish(r: NetcatResult, verbose: boolean | undefined): void {
  const truncated = !r.inputEnded && (r.undelivered > 0 || !process.stdin.isTTY);
  if (truncated) {
    const known = r.undelivered > 0 ? `${r.undelivered} bytes of stdin were not delivered` : 'the rest of stdin was not delivered';
    throw new ExitError(`the peer closed before stdin ended: sent ${r.sent} bytes, ${known}`, 'KVMCHAN_E_UNDELIVERED');
  }
  report(verbose, `done: sent ${r.sent} bytes, received ${r.received} bytes`);
}

const run = (vchan: Vchan, opts: CommonOpts): Promise<NetcatResult> =>
  netcat(vchan, { input: process.stdin, output: process.stdout, closeOnEof: opts.closeOnEof === true, unreadInput: unreadStdin });

export function registerNetcat(program: Command): void {
  program
    .command('listen')
    .description('serve a vchan on PORT toward DOMAIN and copy stdin to it and it to stdout')
    .argument('<port>', 'vchan port (u32)', parsePort)
    .option('-d, --domain <domain>', 'peer domain allowed to connect (id or name)', parseDomain, 0)
    .addOption(sizeOption('--read-min <size>', 'minimum size of the ring we read', 65536))
    .addOption(sizeOption('--write-min <size>', 'minimum size of the ring we write', 65536))
    .option('-N, --close-on-eof', 'close the vchan when stdin ends (the peer then sees end of stream)')
    .addOption(durationOption('-t, --timeout <time>', 'give up (exit status 1) if no client connects in time (default: wait forever)'))
    .option('-v, --verbose', 'report progress on stderr')
    .action(async (port: number, opts: CommonOpts & { domain: number | string; readMin: number; writeMin: number; timeout?: number }) => {
      const vchan = await Vchan.listen({
        port,
        domain: opts.domain,
        readMin: opts.readMin,
        writeMin: opts.writeMin,
        ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
      });
      try {
        vchan.ref();
        report(opts.verbose, `listening on port ${port} (rings ${vchan.readSize}/${vchan.writeSize} bytes)`);
        await vchan.waitConnected(opts.timeout === undefined ? {} : { timeout: opts.timeout });
        vchan.unref();
        report(opts.verbose, 'client connected');
        finish(await run(vchan, opts), opts.verbose);
      } finally {
        vchan.close();
      }
    });

  program
    .command('connect')
    .description('connect to the vchan served on PORT by DOMAIN and copy stdin to it and it to stdout')
    .argument('<port>', 'vchan port (u32)', parsePort)
    .option('-d, --domain <domain>', 'domain of the server (id or name)', parseDomain, 0)
    .addOption(durationOption('-t, --timeout <time>', 'how long to wait for the server to appear (default: forever)'))
    .option('-N, --close-on-eof', 'close the vchan when stdin ends (the peer then sees end of stream)')
    .option('-v, --verbose', 'report progress on stderr')
    .action(async (port: number, opts: CommonOpts & { domain: number | string; timeout?: number }) => {
      const base = {
        port,
        domain: opts.domain,
        ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
      };
      let vchan: Vchan;
      try {
        // Try without waiting first, so that a wait can be announced (on a terminal or -v).
        vchan = await Vchan.connect({ ...base, timeout: 0 });
      } catch (err) {
        const waitable = err instanceof DaemonError && (err.code === 'KVMCHAN_E_DAEMON_ENOENT' || err.code === 'KVMCHAN_E_DAEMON_EBUSY');
        if (!waitable || opts.timeout === 0) throw err;
        if (opts.verbose === true || process.stderr.isTTY) {
          process.stderr.write(`kvmchan: waiting for a server on port ${port} of domain ${opts.domain}…\n`);
        }
        vchan = await Vchan.connect({ ...base, ...(opts.timeout === undefined ? {} : { timeout: opts.timeout }) });
      }
      try {
        report(opts.verbose, `connected to port ${port} of domain ${opts.domain}`);
        finish(await run(vchan, opts), opts.verbose);
      } finally {
        vchan.close();
      }
    });
}
