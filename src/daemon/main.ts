#!/usr/bin/env node
/** kvmchand command line (docs/operations.md). */
import { Command, Option } from 'commander';
import { loadConfig, defaultRuntimeDir } from './config.js';
import { createLogger } from './logger.js';
import { Daemon } from './daemon.js';
import { KvmchanError } from '../errors.js';

interface Opts {
  host?: boolean;
  guest?: boolean;
  runtimeDir?: string;
  config?: string;
  logLevel?: string;
}

const program = new Command('kvmchand')
  .description('kvmchan daemon: sets up vchans between processes and domains (host: domain 0)')
  .addOption(new Option('--host', 'run as the host daemon (default)').conflicts('guest'))
  .addOption(new Option('--guest', 'run inside a guest VM (not available in this build)'))
  .option('-r, --runtime-dir <dir>', `runtime directory for the client socket and pid file (default: ${defaultRuntimeDir()}, or $KVMCHAN_RUNTIME_DIR)`)
  .option('-c, --config <file>', 'JSON configuration file (see docs/operations.md)')
  .addOption(new Option('-l, --log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
  .showHelpAfterError()
  .action((opts: Opts) => {
    if (opts.guest === true) {
      process.stderr.write('kvmchand: --guest mode is not available in this build yet\n');
      process.exitCode = 2;
      return;
    }
    let daemon: Daemon;
    try {
      const config = loadConfig(opts.config, {
        ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
        ...(opts.logLevel === undefined ? {} : { logLevel: opts.logLevel as 'info' }),
      });
      daemon = new Daemon(config, createLogger(config.logLevel));
      daemon.start();
    } catch (err) {
      const code = err instanceof KvmchanError ? ` [${err.code}]` : '';
      process.stderr.write(`kvmchand: ${(err as Error).message}${code}\n`);
      process.exitCode = 1;
      return;
    }
    const stop = (signal: string): void => {
      daemon.log.info({ signal }, 'shutting down');
      daemon.stop();
    };
    process.once('SIGTERM', () => {
      stop('SIGTERM');
    });
    process.once('SIGINT', () => {
      stop('SIGINT');
    });
  });

program.parse();
