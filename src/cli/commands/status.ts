/** `kvmchan status`: domains, pools, vchans and shared-memory regions as the daemon sees them. */
import type { Command } from 'commander';
import { DaemonConnection } from '../../client/daemon-connection.js';
import { listRegionEntries } from '../../client/shmem.js';
import { DaemonError } from '../../errors.js';
import { Command as Cmd, Errno, NO_UID, POOL_STATE_NAMES, RegionFlag, SHM_PAGE_SIZE } from '../../protocol/constants.js';
import type { DomainEntry, PoolEntry, RegionEntry, VchanEntry } from '../../protocol/types.js';
import { table, bytes } from '../format.js';
import { endpointStateName, toStatusJson } from '../status-json.js';

const STATE = endpointStateName;

export interface DaemonStatus {
  domains: DomainEntry[];
  pools: PoolEntry[];
  vchans: VchanEntry[];
  regions: RegionEntry[];
}

/**
 * The regions this caller may see; none from a daemon that serves no regions — a guest daemon
 * (EOPNOTSUPP, docs/shmem.md §8) or one older than LIST_REGIONS (ENOSYS, wire-protocol.md §9).
 */
async function fetchRegions(conn: DaemonConnection): Promise<RegionEntry[]> {
  try {
    return await listRegionEntries(conn);
  } catch (err) {
    // A DaemonError carries the reply's err, a negative errno (wire-protocol.md §4.2).
    const errno = err instanceof DaemonError ? Math.abs(err.errno ?? 0) : 0;
    if (errno === Errno.ENOSYS || errno === Errno.EOPNOTSUPP) return [];
    throw err;
  }
}

export async function fetchStatus(runtimeDir?: string): Promise<DaemonStatus> {
  const conn = await DaemonConnection.open(runtimeDir);
  try {
    const domains: DomainEntry[] = [];
    for (let start = 0; ;) {
      const r = await conn.request(Cmd.LIST_DOMAINS, { start });
      domains.push(...r.body.entries);
      if (r.body.next === 0) break;
      start = r.body.next;
    }
    const pools: PoolEntry[] = [];
    for (let start = 0; ;) {
      const r = await conn.request(Cmd.LIST_POOLS, { start });
      pools.push(...r.body.entries);
      if (r.body.next === 0) break;
      start = r.body.next;
    }
    const vchans: VchanEntry[] = [];
    for (let start = 0; ;) {
      const r = await conn.request(Cmd.LIST_VCHANS, { start });
      vchans.push(...r.body.entries);
      if (r.body.next === 0) break;
      start = r.body.next;
    }
    return { domains, pools, vchans, regions: await fetchRegions(conn) };
  } finally {
    conn.close();
  }
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('show domains, pools, vchans and shared-memory regions known to the local kvmchand')
    .option('--json', 'machine-readable output (versioned schema, docs/cli.md "status --json")')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const { runtimeDir } = cmd.optsWithGlobals<{ runtimeDir?: string }>();
      const st = await fetchStatus(runtimeDir);
      if (opts.json === true) {
        process.stdout.write(`${JSON.stringify(toStatusJson(st), null, 2)}\n`);
        return;
      }
      process.stdout.write(`Domains (${st.domains.length})\n`);
      process.stdout.write(
        `${table(
          ['ID', 'NAME', 'VCHANS'],
          st.domains.map((d) => [String(d.domain), d.name, String(d.vchans)]),
        )}\n\n`,
      );
      if (st.pools.length > 0) {
        process.stdout.write(`Pools (${st.pools.length})\n`);
        process.stdout.write(
          `${table(
            ['POOL', 'MEMBERS', 'STATE', 'SIZE', 'USED', 'VECTORS USED', 'VCHANS'],
            st.pools.map((p) => [
              String(p.pool),
              [p.memberA, p.memberB]
                .filter((m) => m !== 0)
                .map((m, i) => `${m}${(p.joined & (1 << i)) !== 0 ? '' : ' (detached)'}`)
                .join(' + '),
              POOL_STATE_NAMES[p.state] ?? String(p.state),
              bytes(p.size),
              bytes(p.size - p.freeBytes),
              `${p.vectors - p.freeVectors}/${p.vectors}`,
              String(p.vchans),
            ]),
          )}\n\n`,
        );
      }
      process.stdout.write(`Vchans (${st.vchans.length})\n`);
      process.stdout.write(
        `${table(
          ['HANDLE', 'SERVER', 'CLIENT', 'PORT', 'SERVER-STATE', 'CLIENT-STATE', 'RINGS c2s/s2c', 'C2S', 'S2C', 'PIDS'],
          st.vchans.map((v) => [
            String(v.handle),
            String(v.serverDomain),
            String(v.clientDomain),
            String(v.port),
            STATE(v.serverState),
            STATE(v.clientState),
            `${bytes(2 ** v.readOrder)}/${bytes(2 ** v.writeOrder)}`,
            bytes(v.bytesClientToServer),
            bytes(v.bytesServerToClient),
            `${v.serverPid || '-'}/${v.clientPid || '-'}`,
          ]),
        )}\n`,
      );
      if (st.regions.length > 0) {
        process.stdout.write(`\nShared-memory regions (${st.regions.length})\n`);
        process.stdout.write(
          `${table(
            ['ID', 'OWNER', 'TARGET', 'PAGES', 'SIZE', 'STATE', 'HOLDS', 'CREATOR uid/pid'],
            st.regions.map((r) => [
              String(r.id),
              String(r.ownerDomain),
              String(r.targetDomain),
              String(r.pages),
              bytes(r.pages * SHM_PAGE_SIZE),
              (r.flags & RegionFlag.RELEASED) !== 0 ? 'released' : 'shared',
              String(r.holds),
              `${r.creatorUid === NO_UID ? '-' : r.creatorUid}/${r.creatorPid || '-'}`,
            ]),
          )}\n`,
        );
      }
    });
}
