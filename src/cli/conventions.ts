/**
 * What every kvmchan command line does the same way (docs/cli.md "Conventions"): a usage
 * error is one line plus "run with --help" and exit status 2; a failure is
 * `NAME: message [code]` and exit status 1 (or the status the failure carries); a closed
 * stdout (`kvmchan status | head -2`) ends the program quietly instead of printing a stack.
 */
import { type Command, CommanderError } from 'commander';
import { KvmchanError } from '../errors.js';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** A failure with its own exit status (e.g. undelivered bytes, a timeout). */
export class ExitError extends KvmchanError {
  readonly exitCode: number;
  constructor(message: string, code: ConstructorParameters<typeof KvmchanError>[1], exitCode = EXIT_FAILURE) {
    super(message, code);
    this.name = 'ExitError';
    this.exitCode = exitCode;
  }
}

function helpHint(name: string, cmd: Command | null): string {
  const path: string[] = [];
  for (let c = cmd; c !== null; c = c.parent) path.unshift(c.name());
  return `run '${path.length > 0 ? path.join(' ') : name} --help' for usage`;
}

/** Applies to `program` and, through commander's inheritance, to every subcommand added after. */
export function configureConventions(program: Command, name: string): void {
  let current: Command | null = null;
  program.hook('preSubcommand', (_p, sub) => {
    current = sub;
  });
  program
    .showHelpAfterError(false)
    .configureOutput({
      outputError: (str, write) => {
        write(`${name}: ${str.replace(/^error: /, '').trimEnd()}\n${helpHint(name, current)}\n`);
      },
    })
    .exitOverride((err: CommanderError) => {
      if (err.exitCode === 0) throw err;
      process.exit(EXIT_USAGE);
    });
  quietOnClosedOutput(name);
}

const cleanups = new Set<() => Promise<void>>();
let exiting = false;

/**
 * Registers what must be undone on every exit path (a private daemon, temporary directories,
 * child processes): run by exitAfterCleanup on a closed output or a signal. Returns the remover.
 */
export function addCleanup(fn: () => Promise<void>): () => void {
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}

/** Runs every registered cleanup (errors ignored: the others must run too), then exits. */
export async function exitAfterCleanup(status: number): Promise<never> {
  if (!exiting) {
    exiting = true;
    for (const fn of [...cleanups]) await fn().catch(() => undefined);
  }
  process.exit(status);
}

/** SIGINT/SIGTERM: clean up, then exit 130/143 as a shell expects. */
export function cleanupOnSignals(): () => void {
  const onSignal = (sig: NodeJS.Signals): void => {
    void exitAfterCleanup(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

/**
 * A reader that went away (EPIPE: `kvmchan status | head -2`) is not an error worth a stack
 * trace: stop writing, clean up, exit 0.
 */
export function quietOnClosedOutput(name: string): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (exiting) return;
      if (err.code === 'EPIPE') {
        void exitAfterCleanup(0);
        return;
      }
      if (stream === process.stdout) process.stderr.write(`${name}: cannot write output: ${err.message}\n`);
      void exitAfterCleanup(EXIT_FAILURE);
    });
  }
}

export function reportFailure(name: string, err: unknown): void {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
    return;
  }
  const code = err instanceof KvmchanError ? ` [${err.code}]` : '';
  const usage = err instanceof KvmchanError && (err.code === 'KVMCHAN_E_USAGE' || err.code === 'KVMCHAN_E_INVALID_ARG');
  process.stderr.write(`${name}: ${(err as Error).message}${code}\n${usage ? `run '${name} --help' for usage\n` : ''}`);
  process.exitCode = err instanceof ExitError ? err.exitCode : usage ? EXIT_USAGE : EXIT_FAILURE;
}
