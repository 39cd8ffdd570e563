#!/usr/bin/env node
/** The `kvmchan` command line (docs/cli.md). */
import { Command } from 'commander';
import { registerNetcat } from './commands/netcat-cmd.js';
import { registerStatus } from './commands/status.js';
import { registerDemo } from './commands/demo.js';
import { KvmchanError } from '../errors.js';

const program = new Command('kvmchan')
  .description('vchans between processes and VMs on KVM: netcat, status, demo')
  .option('-r, --runtime-dir <dir>', 'kvmchand runtime directory (default: $KVMCHAN_RUNTIME_DIR or the system default)')
  .showHelpAfterError();

program.hook('preAction', (_this, action) => {
  // Global options reach subcommands through the environment the client library reads.
  const { runtimeDir } = action.optsWithGlobals<{ runtimeDir?: string }>();
  if (runtimeDir !== undefined) process.env['KVMCHAN_RUNTIME_DIR'] = runtimeDir;
});

registerNetcat(program);
registerStatus(program);
registerDemo(program);

program.parseAsync().catch((err: unknown) => {
  const code = err instanceof KvmchanError ? ` [${err.code}]` : '';
  process.stderr.write(`kvmchan: ${(err as Error).message}${code}\n`);
  process.exitCode = 1;
});
