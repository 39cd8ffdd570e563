#!/usr/bin/env node
/** The `kvmchan` command line (docs/cli.md). */
import { Command, CommanderError } from 'commander';
import { registerNetcat } from './commands/netcat-cmd.js';
import { registerStatus } from './commands/status.js';
import { registerDemo } from './commands/demo.js';
import { registerProxy } from './commands/proxy-cmd.js';
import { configureConventions, reportFailure } from './conventions.js';
import { packageVersion } from '../version.js';

const program = new Command('kvmchan')
  .description('vchans between processes and VMs on KVM: netcat, proxy, status, demo')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  .option('-r, --runtime-dir <dir>', 'kvmchand runtime directory (default: $KVMCHAN_RUNTIME_DIR or the system default)');
configureConventions(program, 'kvmchan');

program.hook('preAction', (_this, action) => {
  // Global options reach subcommands through the environment the client library reads.
  const { runtimeDir } = action.optsWithGlobals<{ runtimeDir?: string }>();
  if (runtimeDir !== undefined) process.env['KVMCHAN_RUNTIME_DIR'] = runtimeDir;
});

registerNetcat(program);
registerProxy(program);
registerStatus(program);
registerDemo(program);

program.parseAsync().catch((err: unknown) => {
  if (err instanceof CommanderError && err.exitCode === 0) return;
  reportFailure('kvmchan', err);
});
