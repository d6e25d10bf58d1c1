import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

/**
 * A TCP proxy in front of librdkafka's mock cluster (one broker) that fixes what kafkajs
 * trips over and lets tests take "the broker" away and bring it back.
 *
 * - Metadata responses: every broker is advertised at the proxy's address (so all client
 *   connections pass through here), and the ControllerId (the mock reports 0, which is no
 *   broker) is set to a real broker id. Without that kafkajs's idempotent producer and
 *   admin client fail with KafkaJSBrokerNotFound.
 * - FindCoordinator responses: the coordinator is advertised at the proxy's address.
 * - Metadata requests: AllowAutoTopicCreation (v4+) is cleared, so the mock behaves like a
 *   broker with `auto.create.topics.enable=false` (as the fleet's clusters are: topics come from
 *   `fleet events setup`). A client asking for a topic that does not exist gets
 *   UNKNOWN_TOPIC_OR_PARTITION instead of a topic the mock made up on the spot.
 * - stop() closes the listener and every connection (clients see a broker that is down);
 *   start() listens again on the same port. The mock keeps its data in between.
 * - hang() makes the broker stop answering while it keeps accepting connections and requests
 *   (a stalled broker, or a network partition that drops packets): nothing is answered, on
 *   connections open before or after; resume() lets everything through again, in order, to
 *   the connections still open (as TCP delivers once the path is back).
 * - slow(ms) delays every answer by `ms` (a broker that works, only slowly: a busy disk, a
 *   congested link), keeping each connection's answers in order; slow(0) ends it.
 *
 * - Optionally a secured listener, as a broker's SASL_SSL listener: TLS (a server certificate,
 *   and client certificates when `tls.clientCa` is given) and SASL authentication (PLAIN,
 *   SCRAM-SHA-256, SCRAM-SHA-512) answered here, before anything reaches the mock. A client
 *   that sends any other request before it has authenticated is disconnected, as Kafka does.
 *   ApiVersions answers are completed with SaslHandshake and SaslAuthenticate.
 *
 * Only the non-flexible versions kafkajs 2.x speaks are rewritten (Metadata v0-v8,
 * FindCoordinator v0-v2, ApiVersions v0-v2); anything else passes through untouched.
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
  /** SASL authentications that succeeded / failed so far (secured listener only). */
  authentications(): { succeeded: number; failed: number };
  /**
   * The broker stops answering: every response is held back, on existing and new connections
   * (which are still accepted). Requests are held too (the broker never sees them), unless
   * `writes`: then they reach the broker, which acts on them (writes a batch), and only its
   * answers are held. `openOnly`: only the connections open now hang, new ones are served (the
   * old connections are dead without either end knowing, e.g. a firewall forgot them).
   */
  hang(opts?: { writes?: boolean; openOnly?: boolean }): void;
  /** Ends a hang: held requests go on to the broker and held responses to their clients, in order. */
  resume(): void;
  /** Every answer from now on reaches its client `ms` late, in order per connection; 0 ends it. */
  slow(ms: number): void;
}

export type SaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';

export interface ProxySecurity {
  /** TLS with this server certificate and key (PEM); `clientCa` also asks for a client certificate signed by it. */
  tls?: { cert: string; key: string; clientCa?: string };
  /** The one user the listener accepts. */
  sasl?: { mechanism: SaslMechanism; username: string; password: string };
}

const API_PRODUCE = 0;
const API_METADATA = 3;
const API_FIND_COORDINATOR = 10;
const API_SASL_HANDSHAKE = 17;
const API_API_VERSIONS = 18;
const API_SASL_AUTHENTICATE = 36;
const ERROR_UNSUPPORTED_SASL_MECHANISM = 33;
const ERROR_ILLEGAL_SASL_STATE = 34;
const ERROR_SASL_AUTHENTICATION_FAILED = 58;

export async function startKafkaProxy(
  upstream: { host: string; port: number },
  opts: { port?: number; autoCreateTopics?: boolean } & ProxySecurity = {},
): Promise<KafkaProxy> {
  const host = '127.0.0.1';
  let port = opts.port ?? 0;
  const sockets = new Set<net.Socket>();
  let server: net.Server | null = null;
  let produceRequests = 0;
  let holdAfter: number | null = null;
  const held: Array<{ client: net.Socket; frame: Buffer }> = [];
  const auth = { succeeded: 0, failed: 0 };
  let hung: { writes: boolean } | null = null;
  let slowMs = 0;
  /** The open connections: each one hung on its own (hang({openOnly})), and sends on what it held back. */
  const connections = new Set<{ hung: { writes: boolean } | null; resume(): void }>();

  const onConnection = (client: net.Socket) => {
    const broker = net.connect(upstream.port, upstream.host);
    const sasl = opts.sasl ? saslServer(opts.sasl) : null;
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
    // While hung: requests not yet passed to the broker, and answers not yet passed to the client.
    const heldRequests: Buffer[] = [];
    const heldAnswers: Buffer[] = [];
    const connection = {
      hung: null as { writes: boolean } | null,
      resume() {
        connection.hung = null;
        for (const frame of heldAnswers.splice(0)) client.write(frame);
        for (const frame of heldRequests.splice(0)) onRequest(frame);
      },
    };
    const hungNow = () => hung ?? connection.hung;
    /** When the last answer delayed by slow() goes out: later ones never overtake it. */
    let lateUntil = 0;
    const toClient = (frame: Buffer) => {
      if (hungNow()) return void heldAnswers.push(Buffer.from(frame));
      const at = Math.max(Date.now() + slowMs, lateUntil);
      if (at <= Date.now()) return void client.write(frame);
      lateUntil = at;
      const copy = Buffer.from(frame);
      setTimeout(() => client.destroyed || client.write(copy), at - Date.now());
    };
    connections.add(connection);
    client.on('close', () => connections.delete(connection));
    client.on('error', closeBoth).on('close', closeBoth);
    broker.on('error', closeBoth).on('close', closeBoth);

    frames(client, (frame) => {
      if (hungNow() && !hungNow()!.writes) heldRequests.push(Buffer.from(frame));
      else onRequest(frame);
    });
    function onRequest(frame: Buffer) {
      // Request header: size, api_key int16, api_version int16, correlation_id int32, ...
      if (frame.length < 12) return closeBoth();
      const apiKey = frame.readInt16BE(4);
      if (sasl && (apiKey === API_SASL_HANDSHAKE || apiKey === API_SASL_AUTHENTICATE)) {
        const answer = sasl.handle(frame);
        toClient(answer.frame);
        if (answer.outcome === 'succeeded') auth.succeeded++;
        if (answer.outcome === 'failed') {
          auth.failed++;
          client.end();
        }
        return;
      }
      // Before authentication only ApiVersions may pass (Kafka closes such a connection too).
      if (sasl && !sasl.authenticated() && apiKey !== API_API_VERSIONS) return closeBoth();
      if (apiKey === API_PRODUCE) produceRequests++;
      if (apiKey === API_METADATA && !opts.autoCreateTopics) {
        try {
          frame = withoutAutoTopicCreation(frame);
        } catch {
          // Unparseable: pass it through as it is.
        }
      }
      if (apiKey === API_METADATA || apiKey === API_FIND_COORDINATOR || apiKey === API_PRODUCE || (sasl && apiKey === API_API_VERSIONS)) {
        pending.set(frame.readInt32BE(8), { apiKey, apiVersion: frame.readInt16BE(6) });
      }
      broker.write(frame);
    }
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
          else if (request.apiKey === API_API_VERSIONS && request.apiVersion <= 2) frame = withSaslApis(frame, request.apiVersion);
        } catch {
          // Unparseable: pass it through as it is and let the client report the problem.
        }
      }
      toClient(frame);
    });
  };

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = opts.tls
        ? tls.createServer(
            { cert: opts.tls.cert, key: opts.tls.key, ...(opts.tls.clientCa ? { ca: opts.tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}) },
            onConnection,
          )
        : net.createServer(onConnection);
      // A client that fails the TLS handshake (unknown CA, no client certificate) is dropped.
      s.on('tlsClientError', (_err, socket) => socket.destroy());
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
    authentications: () => ({ ...auth }),
    hang(o = {}) {
      const how = { writes: o.writes ?? false };
      if (!o.openOnly) hung = how;
      else for (const c of connections) c.hung = how;
    },
    resume() {
      hung = null;
      for (const c of [...connections]) c.resume();
    },
    slow(ms) {
      slowMs = ms;
    },
  };
}

/**
 * The broker side of SASL for one connection: SaslHandshake (v0/v1) names the mechanism,
 * SaslAuthenticate (v0/v1) carries its messages. PLAIN is one message; SCRAM (RFC 5802) is
 * client-first -> server-first (nonce, salt, iterations), client-final (proof) -> server-final
 * (signature), checked against the configured password.
 */
function saslServer(user: { mechanism: SaslMechanism; username: string; password: string }) {
  const mechanism = user.mechanism.toUpperCase();
  const digest = user.mechanism === 'scram-sha-512' ? 'sha512' : 'sha256';
  let handshaken = false;
  let authenticated = false;
  let scram: { clientFirstBare: string; serverFirst: string; nonce: string; salted: Buffer } | null = null;

  const check = (authBytes: Buffer): { ok: true; reply: Buffer; done: boolean } | { ok: false } => {
    if (user.mechanism === 'plain') {
      const [, name, password] = authBytes.toString('utf8').split('\u0000');
      return name === user.username && password === user.password ? { ok: true, reply: Buffer.alloc(0), done: true } : { ok: false };
    }
    const text = authBytes.toString('utf8');
    if (!scram) {
      const bare = text.replace(/^n,[^,]*,/, '');
      const attrs = scramAttributes(bare);
      if (attrs.n !== user.username.replaceAll('=', '=3D').replaceAll(',', '=2C') || !attrs.r) return { ok: false };
      const salt = randomBytes(16);
      const iterations = 4096;
      const nonce = attrs.r + randomBytes(18).toString('base64');
      const serverFirst = `r=${nonce},s=${salt.toString('base64')},i=${iterations}`;
      scram = { clientFirstBare: bare, serverFirst, nonce, salted: pbkdf2Sync(user.password, salt, iterations, digest === 'sha512' ? 64 : 32, digest) };
      return { ok: true, reply: Buffer.from(serverFirst), done: false };
    }
    const attrs = scramAttributes(text);
    const withoutProof = text.slice(0, text.lastIndexOf(',p='));
    if (attrs.r !== scram.nonce || !attrs.p) return { ok: false };
    const authMessage = `${scram.clientFirstBare},${scram.serverFirst},${withoutProof}`;
    const clientKey = createHmac(digest, scram.salted).update('Client Key').digest();
    const storedKey = createHash(digest).update(clientKey).digest();
    const signature = createHmac(digest, storedKey).update(authMessage).digest();
    const proof = Buffer.from(attrs.p, 'base64');
    if (proof.length !== signature.length) return { ok: false };
    const claimedKey = Buffer.from(proof.map((b, i) => b ^ signature[i]!));
    if (!timingSafeEqual(createHash(digest).update(claimedKey).digest(), storedKey)) return { ok: false };
    const serverKey = createHmac(digest, scram.salted).update('Server Key').digest();
    return { ok: true, reply: Buffer.from(`v=${createHmac(digest, serverKey).update(authMessage).digest('base64')}`), done: true };
  };

  return {
    authenticated: () => authenticated,
    handle(frame: Buffer): { frame: Buffer; outcome: 'step' | 'succeeded' | 'failed' } {
      const r = new Reader(frame, 4);
      const apiKey = r.int16();
      const version = r.int16();
      const correlationId = r.int32();
      r.string(); // client id
      const header = int32(correlationId);
      if (apiKey === API_SASL_HANDSHAKE) {
        const asked = (r.string() ?? '').toUpperCase();
        handshaken = asked === mechanism;
        const body = Buffer.concat([int16(handshaken ? 0 : ERROR_UNSUPPORTED_SASL_MECHANISM), int32(1), str(mechanism)]);
        return { frame: withSize(Buffer.concat([header, body])), outcome: handshaken ? 'step' : 'failed' };
      }
      const authBytes = r.bytes();
      const answer = (error: number, message: string | null, bytes: Buffer) =>
        withSize(Buffer.concat([header, int16(error), str(message), int32(bytes.length), bytes, ...(version >= 1 ? [Buffer.alloc(8)] : [])]));
      if (!handshaken || authenticated) {
        return { frame: answer(ERROR_ILLEGAL_SASL_STATE, 'SaslAuthenticate outside a SASL handshake', Buffer.alloc(0)), outcome: 'failed' };
      }
      const result = check(authBytes);
      if (!result.ok) {
        return {
          frame: answer(ERROR_SASL_AUTHENTICATION_FAILED, `Authentication failed during authentication due to invalid credentials with SASL mechanism ${mechanism}`, Buffer.alloc(0)),
          outcome: 'failed',
        };
      }
      if (result.done) authenticated = true;
      return { frame: answer(0, null, result.reply), outcome: result.done ? 'succeeded' : 'step' };
    },
  };
}

function scramAttributes(message: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of message.split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/**
 * ApiVersions response (v0-v2): error_code [api_key min max] throttle_time_ms(v1+) -- with
 * SaslHandshake (v0-v1) and SaslAuthenticate (v0-v1) added when the mock does not list them.
 */
export function withSaslApis(frame: Buffer, version: number): Buffer {
  const r = new Reader(frame, 8);
  const errorCode = r.int16();
  const count = r.int32();
  const entries: Array<[number, number, number]> = [];
  for (let i = 0; i < count; i++) entries.push([r.int16(), r.int16(), r.int16()]);
  for (const key of [API_SASL_HANDSHAKE, API_SASL_AUTHENTICATE]) {
    const at = entries.findIndex(([k]) => k === key);
    if (at >= 0) entries[at] = [key, 0, 1];
    else entries.push([key, 0, 1]);
  }
  const parts = [frame.subarray(4, 8), int16(errorCode), int32(entries.length), ...entries.flatMap(([k, min, max]) => [int16(k), int16(min), int16(max)])];
  if (version >= 1) parts.push(frame.subarray(r.pos));
  return withSize(Buffer.concat(parts));
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
  bytes(): Buffer {
    const len = this.int32();
    if (len < 0) return Buffer.alloc(0);
    const v = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
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
 * Metadata request (v4-v8): header (api_key api_version correlation_id client_id), [topics]
 * (null: all topics), allow_auto_topic_creation, ... -- returned with that flag cleared.
 * Other versions (v0-v3 always allow it; v9+ is flexible) come back as they are.
 */
export function withoutAutoTopicCreation(frame: Buffer): Buffer {
  const version = frame.readInt16BE(6);
  if (version < 4 || version > 8) return frame;
  const r = new Reader(frame, 12);
  r.string(); // client id
  const count = r.int32();
  for (let i = 0; i < count; i++) r.string();
  if (r.pos >= frame.length || frame[r.pos] === 0) return frame;
  const copy = Buffer.from(frame);
  copy[r.pos] = 0;
  return copy;
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
