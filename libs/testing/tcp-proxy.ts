import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A TCP forwarder standing in for a service; `close()` makes its port a closed port, `open()`
 * brings it back; `hang()` makes the service silent, as one stopped with SIGSTOP: connections
 * stay open (new ones are accepted) and nothing is answered, until `close()`.
 */
export function tcpProxy(target: { host: string; port: number }) {
  let server: Server | null = null;
  let port = 0;
  let hung = false;
  const sockets = new Set<Socket>();
  const pairs = new Map<Socket, Socket>();
  return {
    get port() {
      return port;
    },
    async open() {
      hung = false;
      const s = createServer((client) => {
        sockets.add(client);
        client.on('error', () => client.destroy()).on('close', () => sockets.delete(client));
        if (hung) {
          client.pause();
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
