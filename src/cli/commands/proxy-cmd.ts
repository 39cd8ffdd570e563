/** `kvmchan proxy FROM TO`: sockets through vchans (docs/cli.md "proxy"). */
import type { Command } from 'commander';
import { parseAddress, proxySocketToVchan, proxyVchanToSocket, type Proxy } from '../proxy.js';
import { durationOption, sizeOption } from '../options.js';
import { KvmchanError } from '../../errors.js';

interface ProxyCmdOpts {
  readMin: number;
  writeMin: number;
  timeout: number;
  verbose?: boolean;
  runtimeDir?: string;
}

/** Runs until SIGINT/SIGTERM, then closes every connection and exits 130/143. */
async function runUntilSignalled(proxy: Proxy): Promise<void> {
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => {
      resolve('SIGINT');
    });
    process.once('SIGTERM', () => {
      resolve('SIGTERM');
    });
  });
  await proxy.close();
  process.exitCode = signal === 'SIGINT' ? 130 : 143;
}

export function registerProxy(program: Command): void {
  program
    .command('proxy')
    .description('carry socket connections through vchans, one vchan per connection (either direction)')
    .argument('<from>', 'where connections come from: tcp:[HOST:]PORT or unix:PATH (a local listener), or vchan:[DOMAIN:]PORT (served)')
    .argument('<to>', 'where each goes: vchan:[DOMAIN:]PORT, or tcp:[HOST:]PORT / unix:PATH (connected to)')
    .addOption(sizeOption('--read-min <size>', 'served vchans: minimum size of the ring read', 65536))
    .addOption(sizeOption('--write-min <size>', 'served vchans: minimum size of the ring written', 65536))
    .addOption(durationOption('-t, --timeout <time>', 'socket → vchan: how long a connection waits for the vchan server', 10000))
    .option('-v, --verbose', 'report connections and failures on stderr')
    .addHelpText(
      'after',
      `
Examples:
  kvmchan proxy tcp:8080 vchan:1:80        local port 8080 → port 80 of domain 1 (a vchan each)
  kvmchan proxy vchan:80 tcp:127.0.0.1:80  serve vchan port 80 (to domain 0) → local web server
  kvmchan proxy vchan:1:22 unix:/run/ssh.sock
tcp: without a host listens on / connects to 127.0.0.1 only.`,
    )
    .action(async (fromText: string, toText: string, opts: ProxyCmdOpts) => {
      const from = parseAddress(fromText);
      const to = parseAddress(toText);
      const log = opts.verbose === true ? (msg: string) => process.stderr.write(`kvmchan proxy: ${msg}\n`) : undefined;
      const common = {
        readMin: opts.readMin,
        writeMin: opts.writeMin,
        connectTimeout: opts.timeout,
        ...(log === undefined ? {} : { log }),
      };
      let proxy: Proxy;
      if (from.kind !== 'vchan' && to.kind === 'vchan') proxy = await proxySocketToVchan(from, to, common);
      else if (from.kind === 'vchan' && to.kind !== 'vchan') proxy = await proxyVchanToSocket(from, to, common);
      else throw new KvmchanError('exactly one of FROM and TO must be a vchan: address', 'KVMCHAN_E_USAGE');
      process.stderr.write(`kvmchan proxy: ${proxy.address} → ${toText}\n`);
      await runUntilSignalled(proxy);
    });
}
