import net from 'node:net';

/**
 * A TCP proxy in front of librdkafka's mock cluster (one broker) that fixes what kafkajs
 * trips over and lets tests take "the broker" away and bring it back.
 *
 * - Metadata responses: every broker is advertised at the proxy's address (so all client
 *   connections pass through here), and the ControllerId (the mock reports 0, which is no
 *   broker) is set to a real broker id. Without that kafkajs's idempotent producer and
 *   admin client fail with KafkaJSBrokerNotFound.
 * - FindCoordinator responses: the coordinator is advertised at the proxy's address.
 * - stop() closes the listener and every connection (clients see a broker that is down);
 *   start() listens again on the same port. The mock keeps its data in between.
 *
 * Only the non-flexible versions kafkajs 2.x speaks are rewritten (Metadata v0-v8,
 * FindCoordinator v0-v2); anything else passes through untouched.
 */
export interface KafkaProxy {
  host: string;
  port: number;
  /** `host:port` to give clients as their bootstrap broker. */
  address: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  close(): Promise<void>;
  /** Produce requests seen so far (the broker writes them whether or not the answer is held). */
  produceRequests(): number;
  /**
   * Lets `after` more Produce responses through, then holds the rest back: the broker has
   * written those batches, the client never hears so (a "crash mid-batch" in tests).
   */
  holdProduceResponses(opts?: { after?: number }): void;
  /** Sends held responses on (to clients still connected) and stops holding. */
  releaseProduceResponses(): void;
}

const API_PRODUCE = 0;
const API_METADATA = 3;
const API_FIND_COORDINATOR = 10;

export async function startKafkaProxy(upstream: { host: string; port: number }, opts: { port?: number } = {}): Promise<KafkaProxy> {
  const host = '127.0.0.1';
  let port = opts.port ?? 0;
  const sockets = new Set<net.Socket>();
  let server: net.Server | null = null;
  let produceRequests = 0;
  let holdAfter: number | null = null;
  const held: Array<{ client: net.Socket; frame: Buffer }> = [];

  const onConnection = (client: net.Socket) => {
    const broker = net.connect(upstream.port, upstream.host);
    sockets.add(client);
    sockets.add(broker);
    client.setNoDelay(true);
    broker.setNoDelay(true);
    const pending = new Map<number, { apiKey: number; apiVersion: number }>();
    const closeBoth = () => {
      client.destroy();
      broker.destroy();
      sockets.delete(client);
      sockets.delete(broker);
    };
    client.on('error', closeBoth).on('close', closeBoth);
    broker.on('error', closeBoth).on('close', closeBoth);

    frames(client, (frame) => {
      // Request header: size, api_key int16, api_version int16, correlation_id int32, ...
      if (frame.length >= 12) {
        const apiKey = frame.readInt16BE(4);
        if (apiKey === API_PRODUCE) produceRequests++;
        if (apiKey === API_METADATA || apiKey === API_FIND_COORDINATOR || apiKey === API_PRODUCE) {
          pending.set(frame.readInt32BE(8), { apiKey, apiVersion: frame.readInt16BE(6) });
        }
      }
      broker.write(frame);
    });
    frames(broker, (frame) => {
      const correlationId = frame.readInt32BE(4);
      const request = pending.get(correlationId);
      if (request) {
        pending.delete(correlationId);
        if (request.apiKey === API_PRODUCE && holdAfter !== null) {
          if (holdAfter <= 0) {
            held.push({ client, frame: Buffer.from(frame) });
            return;
          }
          holdAfter--;
        }
        try {
          if (request.apiKey === API_METADATA && request.apiVersion <= 8) frame = rewriteMetadata(frame, request.apiVersion, host, port);
          else if (request.apiKey === API_FIND_COORDINATOR && request.apiVersion <= 2) frame = rewriteFindCoordinator(frame, request.apiVersion, host, port);
        } catch {
          // Unparseable: pass it through as it is and let the client report the problem.
        }
      }
      client.write(frame);
    });
  };

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = net.createServer(onConnection);
      s.once('error', reject);
      s.listen(port, host, () => {
        s.off('error', reject);
        port = (s.address() as net.AddressInfo).port;
        server = s;
        resolve();
      });
    });

  const stop = async () => {
    const s = server;
    server = null;
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };

  await listen();
  return {
    host,
    get port() {
      return port;
    },
    get address() {
      return `${host}:${port}`;
    },
    async start() {
      if (server) return;
      // The port was just released; retry briefly in case the OS still holds it.
      for (let i = 0; ; i++) {
        try {
          return await listen();
        } catch (err) {
          if (i >= 20 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    stop,
    close: stop,
    produceRequests: () => produceRequests,
    holdProduceResponses(o = {}) {
      holdAfter = o.after ?? 0;
    },
    releaseProduceResponses() {
      holdAfter = null;
      for (const { client, frame } of held.splice(0)) if (!client.destroyed) client.write(frame);
    },
  };
}

/** Calls `onFrame` with each complete size-prefixed Kafka frame (size included). */
function frames(socket: net.Socket, onFrame: (frame: Buffer) => void): void {
  let buffered: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    while (buffered.length >= 4) {
      const size = buffered.readInt32BE(0);
      if (buffered.length < 4 + size) break;
      onFrame(buffered.subarray(0, 4 + size));
      buffered = buffered.subarray(4 + size);
    }
  });
}

class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
  ) {}
  int16() {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  int32() {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  string(): string | null {
    const len = this.int16();
    if (len < 0) return null;
    const v = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return v;
  }
}

function int16(v: number) {
  const b = Buffer.alloc(2);
  b.writeInt16BE(v);
  return b;
}
function int32(v: number) {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
}
function str(v: string | null) {
  if (v === null) return int16(-1);
  const bytes = Buffer.from(v, 'utf8');
  return Buffer.concat([int16(bytes.length), bytes]);
}
function withSize(body: Buffer) {
  return Buffer.concat([int32(body.length), body]);
}

/**
 * Metadata response (v0-v8): [throttle_time_ms v3+] [brokers: node_id host port rack(v1+)]
 * cluster_id(v2+) controller_id(v1+) [topics ...] -- brokers rewritten to the proxy, the
 * controller set to a listed broker; the topics part is copied as it is.
 */
export function rewriteMetadata(frame: Buffer, version: number, host: string, port: number): Buffer {
  const r = new Reader(frame, 8);
  const head: Buffer[] = [frame.subarray(4, 8)];
  if (version >= 3) head.push(int32(r.int32()));
  const brokerCount = r.int32();
  const brokerIds: number[] = [];
  const brokers: Buffer[] = [int32(brokerCount)];
  for (let i = 0; i < brokerCount; i++) {
    const nodeId = r.int32();
    r.string();
    r.int32();
    brokerIds.push(nodeId);
    brokers.push(int32(nodeId), str(host), int32(port));
    if (version >= 1) brokers.push(str(r.string()));
  }
  const tail: Buffer[] = [];
  if (version >= 2) tail.push(str(r.string()));
  if (version >= 1) {
    const controller = r.int32();
    tail.push(int32(brokerIds.includes(controller) || brokerIds.length === 0 ? controller : brokerIds[0]!));
  }
  tail.push(frame.subarray(r.pos));
  return withSize(Buffer.concat([...head, ...brokers, ...tail]));
}

/**
 * FindCoordinator response: v0 error_code node_id host port; v1/v2 throttle_time_ms
 * error_code error_message node_id host port -- host and port rewritten to the proxy.
 */
export function rewriteFindCoordinator(frame: Buffer, version: number, host: string, port: number): Buffer {
  const r = new Reader(frame, 8);
  const parts: Buffer[] = [frame.subarray(4, 8)];
  if (version >= 1) parts.push(int32(r.int32()));
  parts.push(int16(r.int16()));
  if (version >= 1) parts.push(str(r.string()));
  const nodeId = r.int32();
  const oldHost = r.string();
  const oldPort = r.int32();
  // No coordinator (error): keep the empty answer as it is.
  parts.push(int32(nodeId), nodeId < 0 ? str(oldHost) : str(host), int32(nodeId < 0 ? oldPort : port));
  parts.push(frame.subarray(r.pos));
  return withSize(Buffer.concat(parts));
}
