/**
 * Daemon configuration: defaults, an optional JSON file, validated with zod
 * (untrusted input: every field checked, unknown keys refused).
 */
import fs from 'node:fs';
import { findNodeAtLocation, getNodeValue, parseTree, printParseErrorCode, type Node, type ParseError } from 'jsonc-parser';
import { z } from 'zod';
import { InvalidArgumentError } from '../errors.js';
import { MAX_ORDER } from '../ring/layout.js';
import { poolConfigSchema, DEFAULT_POOL_CONFIG } from './pools/pool-config.js';
import { vmSpecSchema } from './vmm/qmp/vm-state.js';
import { DEFAULT_RESERVED_PORTS_BELOW, parsePorts } from './registry/policy.js';

const limitsSchema = z
  .object({
    maxVchans: z.number().int().min(1).max(1_000_000).default(16384),
    maxVchansPerConnection: z.number().int().min(1).max(65536).default(64),
    maxConnections: z.number().int().min(1).max(1_000_000).default(8192),
    maxWaitingClients: z.number().int().min(1).max(1_000_000).default(4096),
    /**
     * Quotas per local uid — and per guest domain for its guest's requests; root is exempt
     * (docs/security.md, "Quotas").
     */
    maxConnectionsPerUid: z.number().int().min(1).max(1_000_000).default(256),
    maxVchansPerUid: z.number().int().min(1).max(1_000_000).default(1024),
    maxWaitingClientsPerUid: z.number().int().min(1).max(1_000_000).default(256),
    maxShmBytesPerUid: z
      .number()
      .int()
      .min(1 << 20)
      .max(2 ** 50)
      .default(2 ** 32),
    /** Shared-memory regions (docs/shmem.md §4): per uid (per guest), and on the daemon. */
    maxShmRegionsPerUid: z.number().int().min(1).max(1_000_000).default(4096),
    maxShmRegions: z.number().int().min(1).max(1_000_000).default(65536),
    /**
     * Connections a guest daemon may have open on the host at once (guest `conn` values with a
     * vchan or an init in flight; docs/security.md, "Guests").
     */
    maxConnectionsPerGuest: z.number().int().min(1).max(1_000_000).default(2048),
    maxRingOrder: z.number().int().min(10).max(MAX_ORDER).default(26),
    /** A connection that sends nothing for this long after connecting is dropped. */
    handshakeTimeoutMs: z.number().int().min(100).max(3_600_000).default(10_000),
    /** A client that leaves over 1 MiB of replies unread this long is dropped. */
    slowPeerTimeoutMs: z.number().int().min(100).max(3_600_000).default(10_000),
    /** How long a vchan request waits for a new pool when every pool is full. */
    capacityWaitMs: z.number().int().min(0).max(600_000).default(10_000),
  })
  .strict();

const uid = z.number().int().min(0).max(0xffff_fffe);

/** A port (u32) or an inclusive range "first-last" (docs/security.md, "Policy"). */
const portsSchema = z.union([z.number(), z.string()]).superRefine((spec, ctx) => {
  try {
    parsePorts(spec);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

const policySchema = z
  .object({
    /** Guest pairs allowed to open vchans to each other, or "all" (docs/security.md, "Policy"). */
    guestPairs: z.union([z.literal('all'), z.array(z.tuple([z.number().int().min(1), z.number().int().min(1)]))]).default([]),
    /** Who may serve host ports and attach to host servers besides the server's uid and root. */
    hostRules: z
      .array(
        z
          .object({
            ports: portsSchema,
            serverUid: uid.optional(),
            allowUids: z.array(uid).max(1024).optional(),
            allowGroups: z.array(z.string().min(1).max(256)).max(1024).optional(),
          })
          .strict()
          .refine((r) => r.serverUid !== undefined || r.allowUids !== undefined || r.allowGroups !== undefined, {
            message: 'a host rule needs serverUid, allowUids or allowGroups',
          }),
      )
      .max(4096)
      .default([]),
    /** Host ports below this are served by root only, like low TCP ports (0: none reserved). */
    reservedPortsBelow: z.number().int().min(0).max(0xffff_ffff).default(DEFAULT_RESERVED_PORTS_BELOW),
    /** Which host uid may attach to what guests serve toward the host, per port (default: the daemon's uid). */
    guestServices: z
      .array(z.object({ ports: portsSchema, hostUid: uid }).strict())
      .max(4096)
      .default([]),
  })
  .strict();

export const configSchema = z
  .object({
    runtimeDir: z.string().min(1).optional(),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    /** Group allowed on the client socket (mode 0660), when it exists. */
    socketGroup: z.string().min(1).default('kvmchan'),
    /** Members of this group may list every vchan and pid, like root (none by default). */
    adminGroup: z.string().min(1).optional(),
    limits: limitsSchema.default(limitsSchema.parse({})),
    policy: policySchema.default(policySchema.parse({})),
    pools: poolConfigSchema.default(DEFAULT_POOL_CONFIG),
    /** Simulated guests (docs/architecture.md, vmm): ids 1..N named sim-<id>. */
    simulateGuests: z.number().int().min(0).max(64).default(0),
    /** QEMU VMs served through their QMP sockets (docs/vms-qmp.md). Names and ids unique. */
    vms: z
      .array(vmSpecSchema)
      .max(1024)
      .default([])
      .superRefine((vms, ctx) => {
        for (const key of ['name', 'qmp', 'id'] as const) {
          const seen = new Set<unknown>();
          for (const [i, v] of vms.entries()) {
            if (v[key] === undefined) continue;
            if (seen.has(v[key])) ctx.addIssue({ code: 'custom', path: [i, key], message: `duplicate ${key} ${String(v[key])}` });
            seen.add(v[key]);
          }
        }
      }),
    qmp: z
      .object({
        /** How often a VM whose QMP socket has no QEMU is tried again. */
        retryMs: z.number().int().min(50).max(600_000).default(1000),
        /** Timeout of each QMP command. */
        commandTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
      })
      .strict()
      .default({ retryMs: 1000, commandTimeoutMs: 10_000 }),
    /** Domains of a libvirtd (docs/vms-libvirt.md); the backend is off unless this is given. */
    libvirt: z
      .object({
        /** The connection URI opened on the socket. */
        uri: z.string().min(1).max(1024).default('qemu:///system'),
        /** libvirtd's UNIX socket. */
        socket: z
          .string()
          .refine((p) => p.startsWith('/'), 'the libvirt socket path must be absolute')
          .refine((p) => Buffer.byteLength(p) <= 107, 'the libvirt socket path must be at most 107 bytes')
          .default('/run/libvirt/libvirt-sock'),
        /** Which running domains to serve: "all", or these domain names. */
        domains: z.union([z.literal('all'), z.array(z.string().min(1).max(1024)).max(4096)]).default('all'),
        /**
         * Domains whose persistent XML declares kvmchan's control device, served at
         * `<runtimeDir>/libvirt/<name>/control.sock` from kvmchand's start (docs/vms-libvirt.md, "Devices at boot").
         */
        bootDomains: z
          .array(
            z
              .string()
              .regex(
                /^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,63}$/,
                'a boot domain name is 1-64 of A-Z a-z 0-9 . _ + - (not starting with a dot)',
              ),
          )
          .max(1024)
          .default([]),
        /** The group QEMU runs as (name or gid), for the sockets of boot devices; hot-plugged devices use the domain's DAC label. */
        qemuGroup: z.union([z.string().min(1).max(64), z.number().int().min(0).max(0xfffffffe)]).optional(),
        /** First reconnect delay after libvirtd went away (doubles up to 10 s). */
        retryMs: z.number().int().min(50).max(600_000).default(500),
        /** Timeout of each libvirt call. */
        callTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
      })
      .strict()
      .optional(),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
export type Limits = z.infer<typeof limitsSchema>;
export type PolicySettings = z.infer<typeof policySchema>;

/** 1-based line and column of a character offset, as editors show them. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return { line, column: offset - before.lastIndexOf('\n') };
}

/**
 * Where a zod issue sits in the file: the value at its path, or for an unknown key the key
 * itself (the issue's path then names the object holding it).
 */
function issueOffset(tree: Node | undefined, issue: z.core.$ZodIssue): number | undefined {
  if (tree === undefined) return undefined;
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  const node = findNodeAtLocation(tree, path);
  if (issue.code === 'unrecognized_keys' && node?.type === 'object') {
    const prop = node.children?.find((c) => c.children?.[0]?.value === issue.keys[0]);
    if (prop !== undefined) return prop.offset;
  }
  return node?.offset;
}

/** Reads, parses and validates the configuration; errors name the file, line and column. */
export function loadConfig(file: string | undefined, overrides: Partial<Config>, opts: { optional?: boolean } = {}): Config {
  let raw: unknown = {};
  let text = '';
  let tree: Node | undefined;
  if (file !== undefined) {
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      // An optional file that does not exist (yet) means the defaults (docs/operations.md).
      if (opts.optional === true && (err as NodeJS.ErrnoException).code === 'ENOENT') return loadConfig(undefined, overrides);
      throw new InvalidArgumentError(`cannot read config ${file}: ${(err as Error).message}`);
    }
    // Strict JSON (no comments, no trailing commas), with positions for the messages.
    const errors: ParseError[] = [];
    tree = parseTree(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
    if (errors.length > 0 || tree === undefined) {
      const e = errors[0];
      const where = e === undefined ? '' : (({ line, column }) => `:${line}:${column}`)(lineColumn(text, e.offset));
      const what = e === undefined ? 'empty' : printParseErrorCode(e.error);
      throw new InvalidArgumentError(`config ${file}${where}: not valid JSON (${what})`);
    }
    raw = getNodeValue(tree) as unknown;
  }
  const merged = { ...(raw as object), ...Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) };
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => {
      const offset = issueOffset(tree, i);
      const at = offset === undefined ? '' : (({ line, column }) => `${file}:${line}:${column}: `)(lineColumn(text, offset));
      return `${at}${i.path.join('.') || '(root)'}: ${i.message}`;
    });
    throw new InvalidArgumentError(`invalid configuration: ${issues.join('; ')}`);
  }
  return parsed.data;
}
