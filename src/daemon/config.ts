/**
 * Daemon configuration: defaults, an optional JSON file, validated with zod
 * (untrusted input: every field checked, unknown keys refused).
 */
import fs from 'node:fs';
import { z } from 'zod';
import { InvalidArgumentError } from '../errors.js';
import { MAX_ORDER } from '../ring/layout.js';
import { poolConfigSchema, DEFAULT_POOL_CONFIG } from './pools/pool-config.js';
import { vmSpecSchema } from './vmm/qmp/vm-state.js';

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

export const configSchema = z
  .object({
    runtimeDir: z.string().min(1).optional(),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    /** Group allowed on the client socket (mode 0660), when it exists. */
    socketGroup: z.string().min(1).default('kvmchan'),
    /** Members of this group may list every vchan and pid, like root (none by default). */
    adminGroup: z.string().min(1).optional(),
    limits: limitsSchema.default(limitsSchema.parse({})),
    policy: z
      .object({
        /** Guest pairs allowed to open vchans to each other, or "all" (docs/security.md, "Policy"). */
        guestPairs: z.union([z.literal('all'), z.array(z.tuple([z.number().int().min(1), z.number().int().min(1)]))]).default([]),
      })
      .strict()
      .default({ guestPairs: [] }),
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

export function loadConfig(file: string | undefined, overrides: Partial<Config>): Config {
  let raw: unknown = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new InvalidArgumentError(`cannot read config ${file}: ${(err as Error).message}`);
    }
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new InvalidArgumentError(`config ${file} is not valid JSON: ${(err as Error).message}`);
    }
  }
  const merged = { ...(raw as object), ...Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) };
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new InvalidArgumentError(`invalid configuration: ${issues}`);
  }
  return parsed.data;
}
