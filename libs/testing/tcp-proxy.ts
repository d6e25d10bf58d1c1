import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/** What PostgreSQL answers a connection while it starts up (after a restart, during recovery). */
export const STARTING_UP = { code: '57P03', message: 'the database system is starting up' };

/**
 * A TCP forwarder standing in for a service; `close()` makes its port a closed port, `open()`
 * brings it back; `hang()` makes the service silent, as one stopped with SIGSTOP: connections
 * stay open (new ones are accepted) and nothing is answered, until `close()`.
 * For PostgreSQL, `refuseStartup()` makes it a server that refuses every new session (as one
 * starting up does), and `forward()` lets new connections through again; `accepted` counts the
 * connections it took.
 */
export function tcpProxy(target: { host: string; port: number }) {
  let server: Server | null = null;
  let port = 0;
  let hung = false;
  let accepted = 0;
  /** Set: new connections are refused as PostgreSQL refuses a startup (null: closed without a word). */
  let refusing: { code: string; message: string } | null | undefined;
  const sockets = new Set<Socket>();
  const pairs = new Map<Socket, Socket>();
  return {
    get port() {
      return port;
    },
    /** Connections accepted since the proxy was made (each one a connection attempt of a client). */
    get accepted() {
      return accepted;
    },
    /** Listens (again, on the same port once it had one); nothing when it listens already. */
    async open() {
      if (server) return;
      hung = false;
      refusing = undefined;
      const s = createServer((client) => {
        accepted++;
        sockets.add(client);
        client.on('error', () => client.destroy()).on('close', () => sockets.delete(client));
        if (hung) {
          client.pause();
          return;
        }
        if (refusing !== undefined) {
          refuseStartup(client, refusing);
          return;
        }
        const upstream = connect(target.port, target.host);
        sockets.add(upstream);
        pairs.set(client, upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
          pairs.delete(client);
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
        client.pipe(upstream).pipe(client);
      });
      await new Promise<void>((resolve, reject) => s.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
      port = (s.address() as AddressInfo).port;
      server = s;
    },
    /**
     * From now on, new connections meet a PostgreSQL that refuses the session: its StartupMessage
     * is answered with a FATAL ErrorResponse (`error`, by default 57P03 "starting up") and the
     * connection is closed; with null it is closed without an answer. Open sessions go on.
     */
    refuseStartup(error: { code: string; message: string } | null = STARTING_UP) {
      refusing = error;
    },
    /**
     * Ends every forwarded session as PostgreSQL does in an immediate shutdown or after a crash of
     * another backend: a NoticeResponse (severity WARNING, `notice`'s SQLSTATE and message) to the
     * client, then both sides closed. With null, closed without a word. New connections are forwarded.
     */
    endSessions(notice: { code: string; message: string } | null) {
      for (const [client, upstream] of pairs) {
        upstream.unpipe(client);
        client.unpipe(upstream);
        if (notice) client.write(pgMessage('N', ['SWARNING', 'VWARNING', `C${notice.code}`, `M${notice.message}`]));
        client.end();
        upstream.destroy();
      }
      pairs.clear();
    },
    /** New connections are forwarded again (after `refuseStartup()`). */
    forward() {
      refusing = undefined;
    },
    hang() {
      hung = true;
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    async close() {
      const s = server;
      server = null;
      if (!s) return;
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      for (const sock of sockets) sock.destroy();
      sockets.clear();
      pairs.clear();
      await closed;
    },
  };
}

/**
 * Answers a PostgreSQL client as a server refusing its session: an SSLRequest with 'N' (no TLS),
 * the StartupMessage with an ErrorResponse (severity FATAL, `error`'s SQLSTATE and message), or
 * with nothing when `error` is null, then closes the connection.
 */
function refuseStartup(client: Socket, error: { code: string; message: string } | null): void {
  let buf = Buffer.alloc(0);
  client.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 8) {
      const length = buf.readUInt32BE(0);
      if (buf.length < length) return;
      const code = buf.readUInt32BE(4);
      buf = buf.subarray(length);
      if (code === 80877103) {
        client.write('N'); // SSLRequest: no TLS here
        continue;
      }
      if (!error) {
        client.end();
        return;
      }
      client.end(pgMessage('E', ['SFATAL', 'VFATAL', `C${error.code}`, `M${error.message}`]));
      return;
    }
  });
}

/** A PostgreSQL backend message of fields (ErrorResponse 'E', NoticeResponse 'N'): each field a type letter and its text. */
function pgMessage(type: 'E' | 'N', fields: string[]): Buffer {
  const body = Buffer.from(fields.map((f) => `${f}\0`).join('') + '\0');
  const head = Buffer.alloc(5);
  head.write(type);
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

const DEFAULT_PORTS: Record<string, number> = { 'postgres:': 5432, 'postgresql:': 5432, 'redis:': 6379 };

/**
 * A tcpProxy in front of the service `url` names (postgres://, redis://), with `url` rewritten to
 * go through it (valid once `open()` gave the proxy its port).
 */
export function tcpProxyFor(url: string) {
  const target = new URL(url);
  const proxy = tcpProxy({ host: target.hostname, port: Number(target.port || DEFAULT_PORTS[target.protocol]) });
  return Object.defineProperty(proxy, 'url', {
    get(): string {
      const through = new URL(url);
      through.host = `127.0.0.1:${proxy.port}`;
      return through.toString();
    },
  }) as typeof proxy & { readonly url: string };
}
