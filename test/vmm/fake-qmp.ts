/**
 * A scriptable fake QMP server for unit tests: greets like QEMU, answers qmp_capabilities, then
 * hands every command to `onCommand` (default: `{"return": {}}`). Tests can write raw bytes to
 * break the protocol on purpose.
 */
import fs from 'node:fs';
import net from 'node:net';

export interface FakeCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

export type CommandHandler = (cmd: FakeCommand, conn: FakeQmpConnection) => unknown;

export const GREETING = { QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'fake' }, capabilities: ['oob'] } };

export class FakeQmpConnection {
  readonly sock: net.Socket;
  constructor(sock: net.Socket) {
    this.sock = sock;
  }
  send(obj: unknown): void {
    this.sock.write(`${JSON.stringify(obj)}\n`);
  }
  raw(s: string | Buffer): void {
    this.sock.write(s);
  }
  event(event: string, data: Record<string, unknown> = {}): void {
    this.send({ event, data, timestamp: { seconds: 1, microseconds: 2 } });
  }
}

export class FakeQmpServer {
  readonly path: string;
  readonly server: net.Server;
  readonly commands: FakeCommand[] = [];
  readonly connections: FakeQmpConnection[] = [];
  greeting: unknown = GREETING;
  /** Return undefined to send nothing (the test answers itself, or never). */
  onCommand: CommandHandler = () => ({});

  private constructor(p: string, server: net.Server) {
    this.path = p;
    this.server = server;
  }

  static async start(p: string): Promise<FakeQmpServer> {
    fs.rmSync(p, { force: true });
    const server = net.createServer();
    const fake = new FakeQmpServer(p, server);
    server.on('connection', (sock) => {
      fake.#serve(sock);
    });
    await new Promise<void>((resolve) => server.listen(p, resolve));
    return fake;
  }

  #serve(sock: net.Socket): void {
    const conn = new FakeQmpConnection(sock);
    this.connections.push(conn);
    sock.on('error', () => undefined);
    if (this.greeting !== null) conn.send(this.greeting);
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => {
      buf += s;
      for (;;) {
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const cmd = JSON.parse(line) as FakeCommand;
        this.commands.push(cmd);
        const reply = cmd.execute === 'qmp_capabilities' ? {} : this.onCommand(cmd, conn);
        if (reply !== undefined) conn.send({ return: reply, id: cmd.id });
      }
    });
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.sock.destroy();
    await new Promise<void>((resolve) =>
      this.server.close(() => {
        resolve();
      }),
    );
    fs.rmSync(this.path, { force: true });
  }
}
