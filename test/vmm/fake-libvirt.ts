// A fake libvirtd for the remote-protocol client tests: it speaks the same framing (u32 length,
// 24-byte header, XDR payload) with its own hand-written encoding, records every call and answers
// through `onCall`. Tests can also push raw bytes (hostile input) and events.
import net from 'node:net';
import fs from 'node:fs';

export interface FakeCall {
  procedure: number;
  serial: number;
  payload: Buffer;
}

export type FakeAnswer = { ok: Buffer } | { error: Buffer } | 'silent';

export function frame(
  program: number,
  procedure: number,
  type: number,
  serial: number,
  status: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(28 + payload.length, 0);
  h.writeUInt32BE(program, 4);
  h.writeUInt32BE(1, 8);
  h.writeInt32BE(procedure, 12);
  h.writeInt32BE(type, 16);
  h.writeUInt32BE(serial, 20);
  h.writeInt32BE(status, 24);
  return Buffer.concat([h, payload]);
}

export function xdrString(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
}

export function xdrU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

export function xdrDomain(name: string, uuidHex: string, id: number): Buffer {
  return Buffer.concat([xdrString(name), Buffer.from(uuidHex, 'hex'), xdrU32(id)]);
}

/** remote_error with code, domain, message, level 2 and every other field null/0. */
export function xdrError(code: number, message: string): Buffer {
  return Buffer.concat([
    xdrU32(code),
    xdrU32(10),
    xdrU32(1),
    xdrString(message),
    xdrU32(2),
    xdrU32(0),
    xdrU32(0),
    xdrU32(0),
    xdrU32(0),
    xdrU32(0),
    xdrU32(0),
    xdrU32(0),
  ]);
}

export class FakeLibvirt {
  readonly path: string;
  readonly calls: FakeCall[] = [];
  readonly #server: net.Server;
  readonly #conns = new Set<net.Socket>();
  onCall: (c: FakeCall) => FakeAnswer = () => ({ ok: Buffer.alloc(0) });

  private constructor(p: string, server: net.Server) {
    this.path = p;
    this.#server = server;
  }

  static start(p: string): Promise<FakeLibvirt> {
    fs.rmSync(p, { force: true });
    return new Promise((resolve, reject) => {
      let fake: FakeLibvirt | null = null;
      const server = net.createServer((sock) => {
        fake!.#accept(sock);
      });
      fake = new FakeLibvirt(p, server);
      server.once('error', reject);
      server.listen(p, () => {
        resolve(fake);
      });
    });
  }

  get connections(): number {
    return this.#conns.size;
  }

  /** Write raw bytes to every client. */
  sendRaw(b: Buffer): void {
    for (const c of this.#conns) c.write(b);
  }

  /** Send an event MESSAGE (remote program, serial 0). */
  sendEvent(procedure: number, payload: Buffer): void {
    this.sendRaw(frame(0x20008086, procedure, 2, 0, 0, payload));
  }

  dropClients(): void {
    for (const c of this.#conns) c.destroy();
  }

  close(): Promise<void> {
    this.dropClients();
    return new Promise((resolve) => {
      this.#server.close(() => {
        resolve();
      });
    });
  }

  #accept(sock: net.Socket): void {
    this.#conns.add(sock);
    sock.on('close', () => this.#conns.delete(sock));
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (buf.length < len) break;
        const m = buf.subarray(0, len);
        buf = buf.subarray(len);
        const program = m.readUInt32BE(4);
        const procedure = m.readInt32BE(12);
        const serial = m.readUInt32BE(20);
        if (program !== 0x20008086) continue; // keepalive pongs
        const call = { procedure, serial, payload: Buffer.from(m.subarray(28)) };
        this.calls.push(call);
        const a = this.onCall(call);
        if (a === 'silent') continue;
        if ('ok' in a) sock.write(frame(0x20008086, procedure, 1, serial, 0, a.ok));
        else sock.write(frame(0x20008086, procedure, 1, serial, 1, a.error));
      }
    });
  }
}
