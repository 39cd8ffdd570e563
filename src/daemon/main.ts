#!/usr/bin/env node
/** kvmchand command line (docs/operations.md). */
import fs from 'node:fs';
import { Command, Option, InvalidArgumentError } from 'commander';
import { loadConfig, type Config } from './config.js';
import type { Logger } from 'pino';
import { native } from '../native.js';
import { defaultRuntimeDir } from '../paths.js';
import { createLogger } from './logger.js';
import { setLevelEverywhere } from '../log-fields.js';
import { groupId } from './local/credentials.js';
import { sdNotify } from './sd-notify.js';
import { FdStore } from './fd-store.js';
import { Daemon } from './daemon.js';
import { GuestDaemon } from './guest/guest-daemon.js';
import { KvmchanError } from '../errors.js';
import { packageVersion } from '../version.js';

interface Opts {
  host?: boolean;
  guest?: boolean;
  deviceDir?: string;
  vfio?: boolean;
  simulateGuests?: number;
  runtimeDir?: string;
  config?: string;
  logLevel?: string;
  checkConfig?: boolean;
  configOptional?: boolean;
}

const program = new Command('kvmchand')
  .description('kvmchan daemon: sets up vchans between processes and domains (host: domain 0)')
  .addOption(new Option('--host', 'run as the host daemon (default)').conflicts('guest'))
  .addOption(new Option('--guest', 'run inside a guest: forward requests to the host over the control device'))
  .addOption(
    new Option(
      '--device-dir <dir>',
      'guest: directory of the ivshmem device sockets (simulated guests: <host runtime dir>/domains/<id>)',
    ).conflicts('vfio'),
  )
  .addOption(
    new Option(
      '--vfio',
      'guest: drive the ivshmem-doorbell PCI devices through VFIO (the default for --guest without --device-dir; needs an IOMMU or VFIO no-IOMMU mode, see docs/vms.md)',
    ),
  )
  .option('--simulate-guests <n>', 'host: simulated guest domains 1..N (guest daemons attach as ordinary processes)', (v) => {
    if (!/^\d+$/.test(v) || Number(v) > 64) throw new InvalidArgumentError('must be an integer 0..64');
    return Number(v);
  })
  .option(
    '-r, --runtime-dir <dir>',
    `runtime directory for the client socket and pid file (default: ${defaultRuntimeDir()}, or $KVMCHAN_RUNTIME_DIR)`,
  )
  .option(
    '-c, --config <file>',
    'JSON configuration file (docs/operations.md); QEMU VMs to serve: "vms": [{"name", "qmp": "/path/to/qmp.sock", "id"?}] (docs/vms-qmp.md)',
  )
  .addOption(new Option('-l, --log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
  .option('--config-optional', 'a --config file that does not exist means the defaults (a SIGHUP reads it once it exists)')
  .option('--check-config', 'validate the configuration (file and options), print problems, exit 0 if it is valid, 1 if not')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  // A usage error is one line and a pointer to --help, exit status 2 (docs/cli.md "Conventions").
  .showHelpAfterError("run 'kvmchand --help' for usage")
  .configureOutput({
    outputError: (str, write) => {
      write(`kvmchand: ${str.replace(/^error: /, '')}`);
    },
  })
  .exitOverride((err) => {
    if (err.exitCode === 0) process.exit(0);
    process.exit(2);
  })
  .action(async (opts: Opts) => {
    const fail = (err: unknown): void => {
      const code = err instanceof KvmchanError ? ` [${err.code}]` : '';
      process.stderr.write(`kvmchand: ${(err as Error).message}${code}\n`);
      process.exitCode = 1;
    };
    let daemon: { log: Logger; stop: () => void };
    const overrides = {
      ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
      ...(opts.logLevel === undefined ? {} : { logLevel: opts.logLevel as 'info' }),
      ...(opts.simulateGuests === undefined ? {} : { simulateGuests: opts.simulateGuests }),
    };
    let config: Config;
    try {
      config = loadConfig(opts.config, overrides, { optional: opts.configOptional === true });
      if (opts.checkConfig === true) {
        for (const w of groupWarnings(config)) process.stderr.write(`kvmchand: warning: ${w}\n`);
        const what =
          opts.config === undefined ? '(defaults)' : fs.existsSync(opts.config) ? opts.config : `${opts.config} (absent: the defaults)`;
        process.stdout.write(`kvmchand: configuration ${what} is valid\n`);
        return;
      }
      const log = createLogger(config.logLevel);
      // (A missing adminGroup is reported by the local socket itself.)
      const missing = groupWarnings(config)[0];
      if (process.getuid?.() === 0 && missing?.startsWith('socketGroup') === true) log.warn({ group: config.socketGroup }, missing);
      if (opts.guest !== true && (opts.vfio === true || opts.deviceDir !== undefined)) {
        throw new KvmchanError('--vfio and --device-dir only apply with --guest', 'KVMCHAN_E_INVALID_ARG');
      }
      checkFdLimit(config, log);
      if (opts.guest === true) {
        const source =
          opts.deviceDir === undefined ? ({ kind: 'vfio' } as const) : ({ kind: 'socket', deviceDir: opts.deviceDir } as const);
        const g = new GuestDaemon(config, log, source, (err) => {
          log.error({ err: err.message, code: err.code }, 'lost the host; exiting');
          process.exitCode = 1;
        });
        await g.start();
        daemon = g;
      } else {
        // Before anything else opens an fd: LISTEN_FDS names fds 3 and up (fd-store.ts).
        const d = new Daemon(config, log, { fdStore: FdStore.fromEnvironment(log) });
        d.start();
        daemon = d;
      }
    } catch (err) {
      fail(err);
      return;
    }
    // Neither waits for the service manager nor throws (sd-notify.ts): failures are logged.
    sdNotify({ READY: 1, STATUS: 'serving', MAINPID: process.pid }, daemon.log);
    const stop = (signal: string): void => {
      sdNotify({ STOPPING: 1 }, daemon.log);
      daemon.log.info({ signal }, 'shutting down');
      daemon.stop();
    };
    // SIGHUP reloads what can change while running (logLevel) and says what needs a restart;
    // an invalid file is reported and ignored (docs/operations.md, "Running").
    process.on('SIGHUP', () => {
      const log = daemon.log;
      if (opts.config === undefined) {
        log.info({ signal: 'SIGHUP' }, 'no configuration file to reload');
        return;
      }
      let next: Config;
      try {
        next = loadConfig(opts.config, overrides, { optional: opts.configOptional === true });
      } catch (err) {
        log.error({ signal: 'SIGHUP', err: (err as Error).message }, 'configuration not reloaded: kept the running one');
        return;
      }
      const changed = (Object.keys({ ...config, ...next }) as (keyof Config)[]).filter(
        (k) => JSON.stringify(config[k]) !== JSON.stringify(next[k]),
      );
      if (next.logLevel !== config.logLevel) setLevelEverywhere(log, next.logLevel);
      const restart = changed.filter((k) => k !== 'logLevel');
      config = { ...config, logLevel: next.logLevel };
      log.info({ signal: 'SIGHUP', changed, needRestart: restart }, 'configuration reloaded');
    });
    process.once('SIGTERM', () => {
      stop('SIGTERM');
    });
    process.once('SIGINT', () => {
      stop('SIGINT');
    });
  });

await program.parseAsync();

/**
 * A socket group that does not exist leaves the client socket to root alone (mode 0660, group
 * root): say so instead of failing silently. Groups come from NSS, as for the socket itself.
 */
function groupWarnings(config: Config): string[] {
  const out: string[] = [];
  if (groupId(config.socketGroup) === undefined) {
    out.push(
      `socketGroup "${config.socketGroup}" does not exist: only root can use the daemon socket (create it: groupadd --system ${config.socketGroup})`,
    );
  }
  if (config.adminGroup !== undefined && groupId(config.adminGroup) === undefined) {
    out.push(`adminGroup "${config.adminGroup}" does not exist: only root is privileged`);
  }
  return out;
}

/**
 * Raise the soft fd limit to the hard one and say so if the configured limits cannot fit in it
 * (docs/security.md, "Quotas"): a host vchan holds 3 fds (memfd, 2 eventfds) until its client has
 * attached and none after (docs/pools.md §1), a connection 1; the worst case, counted here, is
 * every vchan still waiting for its client.
 * Without this, one user opening vchans would run the daemon out of fds and everybody would get
 * EIO instead of a quota error.
 */
function checkFdLimit(config: Config, log: Logger): void {
  let nofile: number;
  try {
    nofile = native.raiseNofileLimit();
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'cannot read or raise RLIMIT_NOFILE');
    return;
  }
  const need = config.limits.maxVchans * 3 + config.limits.maxConnections + 256;
  if (need > nofile) {
    log.warn(
      { nofile, maxVchans: config.limits.maxVchans, maxConnections: config.limits.maxConnections, need },
      'the fd limit is below what limits.maxVchans and limits.maxConnections may need: lower them or raise LimitNOFILE',
    );
  } else log.debug({ nofile }, 'fd limit');
}
