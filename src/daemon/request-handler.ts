/**
 * The requests every daemon connection answers the same way, whoever asks — a process on the
 * local socket or a guest daemon over its guest link: the handshake (GET_VERSION,
 * CHECK_COMMAND) and the LIST_* pages (wire-protocol.md §6.1, §6.2, §6.6, §6.7, §6.10).
 * Everything comes from the VchanService and the caller's scope; the connections only frame
 * and send.
 */
import { Command, DomainFlag, MAX_PAYLOAD, PROTOCOL_VERSION } from '../protocol/constants.js';
import { encodeReply } from '../protocol/codec.js';
import { checkCommand, type AllowMask } from '../protocol/allow-mask.js';
import { MAX_DOMAIN_ENTRIES, MAX_POOL_ENTRIES, MAX_REGION_ENTRIES, MAX_VCHAN_ENTRIES } from '../protocol/messages.js';
import type { AnyRequest, Transport } from '../protocol/types.js';
import type { Caller } from './registry/registry.js';
import type { VchanService } from './vchan-service.js';
import type { RegionService } from './regions/region-registry.js';
import { poolEntry, regionEntry, vchanEntry } from './wire-views.js';

export type HandshakeRequest = Extract<AnyRequest, { id: typeof Command.GET_VERSION | typeof Command.CHECK_COMMAND }>;
export type ListRequest = Extract<AnyRequest, { id: typeof Command.LIST_DOMAINS | typeof Command.LIST_VCHANS | typeof Command.LIST_POOLS }>;
export type ListRegionsRequest = Extract<AnyRequest, { id: typeof Command.LIST_REGIONS }>;

export function isHandshake(req: AnyRequest): req is HandshakeRequest {
  return req.id === Command.GET_VERSION || req.id === Command.CHECK_COMMAND;
}

export function isListRequest(req: AnyRequest): req is ListRequest {
  return req.id === Command.LIST_DOMAINS || req.id === Command.LIST_VCHANS || req.id === Command.LIST_POOLS;
}

export interface RequestContext {
  service: VchanService;
  caller: Caller;
  /** The connection's allow mask and transport, for CHECK_COMMAND. */
  allowed: AllowMask;
  transport: Transport;
}

/**
 * One page of a list sorted ascending by `key`: the entries from `start` on, at most `max`, and
 * the key of the first entry left over (0: this was the last page; wire-protocol.md §6.6).
 * Entries with equal keys (region ids of different owners, §6.11) never straddle two pages:
 * the next page starts at that key and repeats none of them.
 */
export function page<T>(all: readonly T[], key: (t: T) => number, start: number, max: number): { next: number; entries: T[] } {
  const from = all.filter((t) => key(t) >= start);
  let n = Math.min(from.length, max);
  if (n < from.length) {
    const cut = key(from[n]!);
    let m = n;
    while (m > 0 && key(from[m - 1]!) === cut) m--;
    if (m === 0) {
      // More equal keys than a page holds cannot be paged by key: this page shows `max` of
      // them and the next starts after the key, so the walk still ends (§6.11).
      const entries = from.slice(0, max);
      const after = from.find((t) => key(t) > cut);
      return { next: after === undefined ? 0 : key(after), entries };
    }
    n = m;
  }
  const entries = from.slice(0, n);
  return { next: from.length > n ? key(from[n]!) : 0, entries };
}

/**
 * The reply to a handshake request, synchronously: it goes out before the connection handles
 * its next frame (a framing error right after a good request must not swallow its reply).
 */
export function answerHandshake(req: HandshakeRequest, ctx: RequestContext): Buffer {
  switch (req.id) {
    case Command.GET_VERSION:
      return encodeReply(req.id, req.seq, 0, { version: PROTOCOL_VERSION, maxPayload: MAX_PAYLOAD });
    case Command.CHECK_COMMAND:
      // wire-protocol.md §6.2/§8: unknown → -ENOSYS, known but not for this connection → -EPERM.
      return encodeReply(req.id, req.seq, checkCommand(req.body.id, ctx.allowed, ctx.transport));
  }
}

/** The reply to a LIST_* request. Throws what the service throws (the connection answers it). */
export async function answerList(req: ListRequest, ctx: RequestContext): Promise<Buffer> {
  const { service, caller } = ctx;
  switch (req.id) {
    case Command.LIST_DOMAINS: {
      const p = page(await service.listDomains(caller), (d) => d.id, req.body.start, MAX_DOMAIN_ENTRIES);
      return encodeReply(req.id, req.seq, 0, {
        next: p.next,
        entries: p.entries.map((d) => ({
          domain: d.id,
          flags:
            (d.id === 0 ? DomainFlag.HOST : 0) | (d.controlUp ? DomainFlag.CONTROL_UP : 0) | (d.id === caller.domain ? DomainFlag.SELF : 0),
          vchans: d.vchans,
          name: d.name,
        })),
      });
    }
    case Command.LIST_VCHANS: {
      const p = page(await service.listVchans(caller), (v) => v.handle, req.body.start, MAX_VCHAN_ENTRIES);
      // Pids are the host's business: a guest does not see them.
      return encodeReply(req.id, req.seq, 0, { next: p.next, entries: p.entries.map((v) => vchanEntry(v, caller.scope === 'local')) });
    }
    case Command.LIST_POOLS: {
      const p = page(await service.listPools(caller), (x) => x.pool, req.body.start, MAX_POOL_ENTRIES);
      return encodeReply(req.id, req.seq, 0, { next: p.next, entries: p.entries.map(poolEntry) });
    }
  }
}

/**
 * The reply to LIST_REGIONS (wire-protocol.md §6.11): one page of what the registry lets the
 * caller see, by region id. Pids are the host's business: a guest caller does not see them.
 */
export function answerListRegions(req: ListRegionsRequest, regions: RegionService, caller: Caller): Buffer {
  const p = page(regions.listFor(caller), (r) => r.id, req.body.start, MAX_REGION_ENTRIES);
  return encodeReply(req.id, req.seq, 0, { next: p.next, entries: p.entries.map((r) => regionEntry(r, caller.scope === 'local')) });
}
