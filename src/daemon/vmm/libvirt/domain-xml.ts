/**
 * What the libvirt backend reads from a running domain's live XML (docs/vms-libvirt.md
 * §"Placement"), and the `<shmem>` XML it attaches. The XML comes from libvirtd; it is still
 * checked: bounded size and depth, and only the few elements below are looked at.
 *
 * - the machine type (`<os><type machine=…>`): q35 ("pc-q35-…", "q35") or pc;
 * - PCIe root ports: `<controller type='pci' model='pcie-root-port' index='N'>` with their
 *   alias, and the `pref64-reserve` a `<qemu:override>` gives the port's alias (0 if none);
 * - which buses carry a device: every `<address type='pci' bus='…'>`;
 * - our own devices: `<shmem name='kvmchan-…'>` and the `<server path>` each one names;
 * - the user and group QEMU runs as: the DAC `<seclabel>`'s `<label>+UID:+GID</label>` (libvirt
 *   writes it into the live XML of every domain it labels).
 */
import { LibvirtProtocolError } from './codec.js';

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Character data directly inside the element (entities decoded), e.g. a `<label>`'s. */
  text: string;
}

const MAX_XML = 4 << 20;
const MAX_DEPTH = 64;
const MAX_ELEMENTS = 100_000;

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function unescape(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ENTITIES[e]!;
  });
}

/** A minimal XML element parser: elements, attributes and text (comments, PIs, CDATA skipped). */
export function parseXml(xml: string): XmlElement {
  if (xml.length > MAX_XML) throw new LibvirtProtocolError(`domain XML of ${xml.length} characters is too large`);
  const root: XmlElement = { name: '#root', attrs: {}, children: [], text: '' };
  const stack: XmlElement[] = [root];
  const tag =
    /<!--[\s\S]*?-->|<\?[\s\S]*?\?>|<!\[CDATA\[[\s\S]*?\]\]>|<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:'[^']*'|"[^"]*"))*)\s*(\/?)>/g;
  const attr = /([\w:.-]+)\s*=\s*(?:'([^']*)'|"([^"]*)")/g;
  let count = 0;
  let last = 0;
  for (const m of xml.matchAll(tag)) {
    const between = xml.slice(last, m.index);
    last = m.index + m[0].length;
    if (between.trim() !== '') stack[stack.length - 1]!.text += unescape(between);
    if (m[2] === undefined) continue; // comment, PI, CDATA
    const [, close, name, attrText, selfClose] = m;
    if (close === '/') {
      const top = stack.pop();
      if (top === undefined || top.name !== name || stack.length === 0) throw new LibvirtProtocolError(`domain XML: unbalanced </${name}>`);
      continue;
    }
    if (++count > MAX_ELEMENTS) throw new LibvirtProtocolError('domain XML has too many elements');
    const el: XmlElement = { name, attrs: {}, children: [], text: '' };
    for (const a of (attrText ?? '').matchAll(attr)) el.attrs[a[1]!] = unescape(a[2] ?? a[3] ?? '');
    stack[stack.length - 1]!.children.push(el);
    if (selfClose !== '/') {
      stack.push(el);
      if (stack.length > MAX_DEPTH) throw new LibvirtProtocolError('domain XML nests too deep');
    }
  }
  if (stack.length !== 1) throw new LibvirtProtocolError('domain XML: unclosed elements');
  return root;
}

function* walk(el: XmlElement): Generator<XmlElement> {
  yield el;
  for (const c of el.children) yield* walk(c);
}

function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

export type MachineKind = 'q35' | 'pc';

export interface RootPort {
  /** Controller index = the bus number devices on it are addressed with. */
  index: number;
  alias: string | null;
  pref64Reserve: number;
  occupied: boolean;
}

export interface DomainLayout {
  machine: MachineKind;
  ports: RootPort[];
  /** `name` attributes of our `<shmem>` devices (kvmchan-ctl, kvmchan-pool-N). */
  ownShmem: string[];
  /** The `<server path>` of each of our `<shmem>` devices, by name (absent: no server). */
  shmemServers: Map<string, string>;
  /** The uid and gid QEMU runs as (the DAC seclabel), or null when the XML has none. */
  qemuIds: { uid: number; gid: number } | null;
}

/** `+UID:+GID` (or `UID:GID`) of a DAC label; names are not resolved here, so they give null. */
export function parseDacLabel(label: string): { uid: number; gid: number } | null {
  const m = /^\s*\+?(\d{1,10}):\+?(\d{1,10})\s*$/.exec(label);
  if (m === null) return null;
  const uid = Number(m[1]);
  const gid = Number(m[2]);
  return uid <= 0xfffffffe && gid <= 0xfffffffe ? { uid, gid } : null;
}

function parseNumber(s: string | undefined): number | null {
  if (s === undefined) return null;
  const t = s.trim();
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(t)) return null;
  const v = Number(t);
  return Number.isSafeInteger(v) ? v : null;
}

export function domainLayout(xml: string, prefix: string): DomainLayout {
  const root = parseXml(xml);
  const dom = child(root, 'domain');
  if (dom === undefined) throw new LibvirtProtocolError('domain XML has no <domain>');
  const machineAttr = child(child(dom, 'os') ?? { name: '', attrs: {}, children: [], text: '' }, 'type')?.attrs.machine ?? '';
  const machine: MachineKind = /q35/.test(machineAttr) ? 'q35' : 'pc';
  const devices = child(dom, 'devices');
  const reserves = new Map<string, number>();
  for (const el of walk(dom)) {
    if (!el.name.endsWith(':override')) continue;
    for (const dev of el.children.filter((c) => c.name.endsWith(':device'))) {
      const alias = dev.attrs.alias;
      if (alias === undefined) continue;
      for (const p of walk(dev)) {
        if (p.name.endsWith(':property') && p.attrs.name === 'pref64-reserve') {
          const v = parseNumber(p.attrs.value);
          if (v !== null) reserves.set(alias, v);
        }
      }
    }
  }
  const usedBuses = new Set<number>();
  const ports: RootPort[] = [];
  const ownShmem: string[] = [];
  const shmemServers = new Map<string, string>();
  for (const el of devices === undefined ? [] : devices.children) {
    for (const a of walk(el)) {
      if (a.name === 'address' && a.attrs.type === 'pci') {
        const bus = parseNumber(a.attrs.bus);
        if (bus !== null) usedBuses.add(bus);
      }
    }
    if (el.name === 'controller' && el.attrs.type === 'pci' && el.attrs.model === 'pcie-root-port') {
      const index = parseNumber(el.attrs.index);
      if (index === null) continue;
      const alias = child(el, 'alias')?.attrs.name ?? null;
      ports.push({ index, alias, pref64Reserve: alias !== null ? (reserves.get(alias) ?? 0) : 0, occupied: false });
    }
    if (el.name === 'shmem' && (el.attrs.name ?? '').startsWith(prefix)) {
      ownShmem.push(el.attrs.name!);
      const server = child(el, 'server')?.attrs.path;
      if (server !== undefined) shmemServers.set(el.attrs.name!, server);
    }
  }
  for (const p of ports) p.occupied = usedBuses.has(p.index);
  let qemuIds: { uid: number; gid: number } | null = null;
  for (const sl of dom.children) {
    if (sl.name !== 'seclabel' || sl.attrs.model !== 'dac') continue;
    const label = child(sl, 'label');
    if (label !== undefined) qemuIds = parseDacLabel(label.text);
  }
  return { machine, ports, ownShmem, shmemServers, qemuIds };
}

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

/**
 * The `<shmem>` of one kvmchan device: ivshmem-doorbell, our server socket, `vectors` MSI-X
 * vectors with ioeventfd, on root port `bus` (slot 0) when given.
 */
export function shmemXml(name: string, socketPath: string, vectors: number, bus: number | undefined): string {
  const address =
    bus !== undefined
      ? `<address type='pci' domain='0x0000' bus='0x${bus.toString(16).padStart(2, '0')}' slot='0x00' function='0x0'/>`
      : '';
  return (
    `<shmem name='${escapeAttr(name)}'><model type='ivshmem-doorbell'/>` +
    `<server path='${escapeAttr(socketPath)}'/>` +
    `<msi vectors='${vectors}' ioeventfd='on'/>${address}</shmem>`
  );
}
