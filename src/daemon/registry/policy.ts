/**
 * Who may open vchans to whom (docs/security.md, "Policy").
 *
 * Between domains: guest↔host always, host↔host always, guest↔guest only for configured pairs,
 * a guest to itself never through the host (loopback is served inside the guest, or refused).
 *
 * Between host uids (local callers; a guest's requests are governed by the domain rules above):
 * - a host vchan server accepts clients of its own uid and root, plus whom a matching host rule
 *   allows (uids, groups);
 * - ports below `reservedPortsBelow` are served by root only, like low TCP ports, unless a rule
 *   gives them to a uid; a rule with `serverUid` reserves its ports to that uid (and root);
 * - a vchan a guest serves toward the host belongs, on the host side, to one host uid — the one a
 *   `guestServices` entry names for its port, else the daemon's own — because it lives in that
 *   uid's pool with the guest (docs/pools.md §1): only that uid and root may attach to it.
 * Every refusal is the same EPERM whatever the reason, so a refused caller learns no more than
 * that.
 */
const HOST_DOMAIN = 0;

/** A port, or an inclusive range "first-last". */
export type PortSpec = number | string;

export interface HostRule {
  ports: PortSpec;
  /** Only this uid (and root) may serve these ports; the rule's allow lists apply to its servers. */
  serverUid?: number | undefined;
  /** Clients of these uids may attach to servers of these ports (besides the server's uid and root). */
  allowUids?: readonly number[] | undefined;
  /** Clients in any of these groups (primary or supplementary) may attach too. */
  allowGroups?: readonly string[] | undefined;
}

export interface GuestService {
  ports: PortSpec;
  /** The host uid whose processes may attach to what a guest serves on these ports. */
  hostUid: number;
}

export interface PolicyConfig {
  /** Guest pairs allowed to talk, or 'all'. Default: none. */
  guestPairs?: readonly (readonly [number, number])[] | 'all';
  hostRules?: readonly HostRule[];
  /** Ports below this are served by root only (unless a rule with serverUid gives them away). */
  reservedPortsBelow?: number;
  guestServices?: readonly GuestService[];
}

/** The part of a caller the uid rules look at. */
export interface PolicySubject {
  uid: number;
  gid: number;
  /** Supplementary groups, as the kernel recorded them at connect (SO_PEERGROUPS). */
  groups?: readonly number[] | undefined;
}

export const DEFAULT_RESERVED_PORTS_BELOW = 1024;

/** Parses "5000" / "5000-5099" / 5000 into an inclusive range; throws on anything else. */
export function parsePorts(spec: PortSpec): { first: number; last: number } {
  const u32 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
  if (typeof spec === 'number') {
    if (!u32(spec)) throw new RangeError(`port ${spec} is not a u32`);
    return { first: spec, last: spec };
  }
  const m = /^(\d{1,10})(?:-(\d{1,10}))?$/.exec(spec);
  if (m === null) throw new RangeError(`"${spec}" is not a port or a range "first-last"`);
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  if (!u32(first) || !u32(last)) throw new RangeError(`"${spec}": ports are u32 (0…4294967295)`);
  if (last < first) throw new RangeError(`"${spec}": the range ends before it starts`);
  return { first, last };
}

interface CompiledRule {
  first: number;
  last: number;
  serverUid: number | undefined;
  allowUids: ReadonlySet<number>;
  allowGids: ReadonlySet<number>;
}

export interface PolicyOptions {
  /** NSS group lookup for `allowGroups` (undefined: no such group, the name matches nobody). */
  groupId?: (name: string) => number | undefined;
  /**
   * The daemon's own uid (default: geteuid()): counts like root for serving reserved ports, and
   * owns guest-served ports no `guestServices` entry names. In a user's own daemon it is that
   * user — nobody else can reach its socket.
   */
  daemonUid?: number;
}

export class Policy {
  readonly #all: boolean;
  readonly #pairs: Set<string>;
  readonly #rules: CompiledRule[];
  readonly #reservedBelow: number;
  readonly #guestServices: { first: number; last: number; hostUid: number }[];
  readonly #daemonUid: number;
  /** allowGroups names NSS does not know (the daemon warns about them at start). */
  readonly unknownGroups: readonly string[];

  constructor(config: PolicyConfig = {}, opts: PolicyOptions = {}) {
    this.#all = config.guestPairs === 'all';
    this.#pairs = new Set();
    if (Array.isArray(config.guestPairs)) {
      for (const [a, b] of config.guestPairs) this.#pairs.add(a < b ? `${a}:${b}` : `${b}:${a}`);
    }
    const unknown: string[] = [];
    this.#rules = (config.hostRules ?? []).map((r) => {
      const gids = new Set<number>();
      for (const name of r.allowGroups ?? []) {
        const gid = opts.groupId?.(name);
        if (gid === undefined) unknown.push(name);
        else gids.add(gid);
      }
      return { ...parsePorts(r.ports), serverUid: r.serverUid, allowUids: new Set(r.allowUids ?? []), allowGids: gids };
    });
    this.unknownGroups = unknown;
    this.#reservedBelow = config.reservedPortsBelow ?? DEFAULT_RESERVED_PORTS_BELOW;
    this.#guestServices = (config.guestServices ?? []).map((s) => ({ ...parsePorts(s.ports), hostUid: s.hostUid }));
    this.#daemonUid = opts.daemonUid ?? process.geteuid?.() ?? 0;
  }

  /** Between domains: null if allowed, else the reason. */
  refuses(a: number, b: number): string | null {
    if (a === HOST_DOMAIN || b === HOST_DOMAIN) return null;
    if (a === b) return `domain ${a} cannot open a vchan to itself through the host`;
    if (this.#all || this.#pairs.has(a < b ? `${a}:${b}` : `${b}:${a}`)) return null;
    return `policy does not allow vchans between domains ${a} and ${b}`;
  }

  #rulesFor(port: number): CompiledRule[] {
    return this.#rules.filter((r) => port >= r.first && port <= r.last);
  }

  /** May a host process of `server.uid` serve `port` (toward any domain)? null if so. */
  refusesServer(server: PolicySubject, port: number): string | null {
    if (server.uid === 0 || server.uid === this.#daemonUid) return null;
    const owners = this.#rulesFor(port)
      .map((r) => r.serverUid)
      .filter((u) => u !== undefined);
    if (owners.length > 0) {
      return owners.includes(server.uid) ? null : `port ${port} is reserved to ${owners.map((u) => `uid ${u}`).join(', ')}`;
    }
    if (port < this.#reservedBelow) return `ports below ${this.#reservedBelow} are served by root only`;
    return null;
  }

  /** May a host process `client` attach to a host server of uid `serverUid` on `port`? */
  refusesHostClient(serverUid: number, client: PolicySubject, port: number): string | null {
    if (client.uid === 0 || client.uid === serverUid) return null;
    const member = (gid: number): boolean => client.gid === gid || (client.groups ?? []).includes(gid);
    for (const r of this.#rulesFor(port)) {
      if (r.serverUid !== undefined && r.serverUid !== serverUid) continue;
      if (r.allowUids.has(client.uid)) return null;
      for (const gid of r.allowGids) if (member(gid)) return null;
    }
    return `the server of port ${port} does not accept clients of uid ${client.uid}`;
  }

  /** The host uid a vchan a guest serves toward the host on `port` belongs to. */
  guestServiceUid(port: number): number {
    return this.#guestServices.find((s) => port >= s.first && port <= s.last)?.hostUid ?? this.#daemonUid;
  }

  /** May a host process `client` attach to a guest's server whose host side belongs to `hostUid`? */
  refusesGuestServiceClient(hostUid: number, client: PolicySubject, port: number): string | null {
    if (client.uid === 0 || client.uid === hostUid) return null;
    return `the guest's server of port ${port} is not for clients of uid ${client.uid}`;
  }
}
