import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import { topics as eventTopics } from '../events/index.js';
import { startKafkaProxy, type KafkaProxy, type ProxySecurity } from './kafka-proxy.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const source = `${root}scripts/kafka-mock/kafka-mock.c`;
const binary = `${root}var/kafka-mock/kafka-mock`;

export interface KafkaMock {
  /** Bootstrap brokers for kafkajs (the proxy in front of the mock). */
  brokers: string[];
  /**
   * With `secure`: a second listener on the same broker that wants TLS and/or SASL (as a
   * broker's SASL_SSL listener next to its PLAINTEXT one), its bootstrap brokers and its
   * authentication counts.
   */
  secure?: { brokers: string[]; authentications(): { succeeded: number; failed: number } };
  /** The mock's own address, bypassing the proxy (for diagnostics only). */
  mockAddress: string;
  /** Takes the broker away: closes every client connection and refuses new ones. Data is kept. */
  stop(): Promise<void>;
  /** Brings the broker back on the same address. */
  start(): Promise<void>;
  /** Ends the proxy and the mock process. */
  close(): Promise<void>;
  /**
   * Creates a topic on the running broker (as `fleet events setup` would on a real one; the
   * mock does not implement CreateTopics). Topics are never created because a client asked
   * for one: the mock behaves like a broker with `auto.create.topics.enable=false`.
   */
  createTopic(topic: TopicSpec): Promise<void>;
  /** Produce requests that reached the broker so far. */
  produceRequests(): number;
  /** The broker answers the next `count` requests of API `apiKey` (0: Produce) with Kafka error `code`. */
  pushErrors(apiKey: number, code: number, count: number): Promise<void>;
  /** See KafkaProxy.holdProduceResponses: the broker writes, the client hears nothing. */
  holdProduceResponses(opts?: { after?: number }): void;
  releaseProduceResponses(): void;
  /**
   * The broker stops answering but keeps accepting connections and requests (a hung broker, or
   * a partition that drops packets), on every listener. See KafkaProxy.hang: with `writes` the
   * requests reach the broker, which writes the batches, and only its answers are held back;
   * with `openOnly` only the connections open now hang (dead ones), new ones are answered.
   */
  hang(opts?: { writes?: boolean; openOnly?: boolean }): void;
  /** The broker answers again: what was held goes on, in order, over the connections still open. */
  resume(): void;
  /** See KafkaProxy.slow: every answer `ms` late (0: on time again), on every listener. */
  slow(ms: number): void;
}

export type TopicSpec = string | { name: string; partitions?: number };

/** The fleet's event topics with 3 partitions each. */
export const defaultMockTopics: TopicSpec[] = Object.values(eventTopics).map((name) => ({ name, partitions: 3 }));

/** Builds scripts/kafka-mock into var/kafka-mock when it is missing or older than its source. */
export function ensureKafkaMockBinary(): string {
  if (!existsSync(binary) || statSync(binary).mtimeMs < statSync(source).mtimeMs) {
    try {
      execFileSync('bash', [`${root}scripts/kafka-mock/build.sh`], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
      throw new Error(
        `cannot build the Kafka mock broker (scripts/kafka-mock/build.sh): ${stderr.trim() || (err as Error).message}. ` +
          'It needs gcc and librdkafka-dev (apt-get install -y librdkafka-dev); bash .ci/run installs both.',
        { cause: err },
      );
    }
  }
  return binary;
}

/**
 * Starts librdkafka's mock cluster (one broker, topics created up front or by `createTopic`:
 * the mock does not implement CreateTopics, and asking for a topic that does not exist does
 * not create it) behind the rewriting proxy of kafka-proxy.ts.
 */
export async function startKafkaMock(
  opts: {
    topics?: TopicSpec[];
    secure?: ProxySecurity;
    /** Pass a client's AllowAutoTopicCreation through: the mock then acts as a broker with `auto.create.topics.enable=true` (Kafka's default). */
    autoCreateTopics?: boolean;
    /** The port clients connect to (default: a free one, chosen by the system). */
    port?: number;
  } = {},
): Promise<KafkaMock> {
  const bin = ensureKafkaMockBinary();
  const args = (opts.topics ?? defaultMockTopics).map((t) => (typeof t === 'string' ? t : `${t.name}:${t.partitions ?? 1}`));
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = stdoutLines(child);
  let mockAddress: string;
  try {
    mockAddress = (await out.next('its address', 10_000)).split(',')[0]!;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const [host, port] = mockAddress.split(':');
  const upstream = { host: host!, port: Number(port) };
  let proxy: KafkaProxy;
  let secured: KafkaProxy | null = null;
  try {
    proxy = await startKafkaProxy(upstream, { autoCreateTopics: opts.autoCreateTopics ?? false, ...(opts.port !== undefined ? { port: opts.port } : {}) });
    if (opts.secure) secured = await startKafkaProxy(upstream, opts.secure);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  let closed = false;
  let creating: Promise<unknown> = Promise.resolve();
  return {
    brokers: [proxy.address],
    secure: secured ? { brokers: [secured.address], authentications: () => secured.authentications() } : undefined,
    mockAddress,
    stop: async () => {
      await proxy.stop();
      await secured?.stop();
    },
    start: async () => {
      await proxy.start();
      await secured?.start();
    },
    async createTopic(topic) {
      const { name, partitions } = typeof topic === 'string' ? { name: topic, partitions: 1 } : topic;
      // One command at a time: each answer is the next line.
      const answer = (creating = creating.catch(() => {}).then(() => {
        child.stdin!.write(`create ${name} ${partitions ?? 1}\n`);
        return out.next(`topic ${name} created`, 5000);
      }));
      const line = await answer;
      if (line !== `created ${name}`) throw new Error(`the Kafka mock broker did not create topic ${name}: ${line}`);
    },
    produceRequests: () => proxy.produceRequests(),
    async pushErrors(apiKey, code, count) {
      const answer = (creating = creating.catch(() => {}).then(() => {
        child.stdin!.write(`errors ${apiKey} ${count} ${code}\n`);
        return out.next(`errors pushed`, 5000);
      }));
      const line = await answer;
      if (line !== `pushed ${count}`) throw new Error(`the Kafka mock broker did not take the errors: ${line}`);
    },
    holdProduceResponses: (o) => proxy.holdProduceResponses(o),
    releaseProduceResponses: () => proxy.releaseProduceResponses(),
    hang(o) {
      proxy.hang(o);
      secured?.hang(o);
    },
    resume() {
      proxy.resume();
      secured?.resume();
    },
    slow(ms) {
      proxy.slow(ms);
      secured?.slow(ms);
    },
    async close() {
      if (closed) return;
      closed = true;
      await proxy.close();
      await secured?.close();
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.stdin?.end();
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/**
 * The mock's stdout line by line: `next()` resolves with the next line (the first is its
 * address). Rejects if the mock exits first, or after `timeoutMs`.
 */
function stdoutLines(child: ChildProcess): { next(what: string, timeoutMs: number): Promise<string> } {
  let out = '';
  let err = '';
  const lines: string[] = [];
  let waiting: { resolve(line: string): void; reject(e: Error): void } | null = null;
  let ended: Error | null = null;
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
      lines.push(out.slice(0, nl).trim());
      out = out.slice(nl + 1);
    }
    if (waiting && lines.length) waiting.resolve(lines.shift()!);
  });
  const end = (e: Error) => {
    ended = e;
    waiting?.reject(e);
  };
  child.once('error', end);
  child.once('exit', (code) => end(new Error(`the Kafka mock broker exited (code ${code}): ${err.trim()}`)));
  return {
    next(what, timeoutMs) {
      if (lines.length) return Promise.resolve(lines.shift()!);
      if (ended) return Promise.reject(ended);
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => settle(() => reject(new Error(`the Kafka mock broker did not report ${what} within ${timeoutMs / 1000} s`))), timeoutMs);
        const settle = (fn: () => void) => {
          clearTimeout(timer);
          waiting = null;
          fn();
        };
        waiting = { resolve: (line) => settle(() => resolve(line)), reject: (e) => settle(() => reject(e)) };
      });
    },
  };
}

export interface ReceivedMessage {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

export interface MessageCollector {
  /** Every message received so far, in arrival order. */
  messages: ReceivedMessage[];
  /** Resolves once `done(messages)` is true; rejects after timeoutMs, saying what arrived. */
  waitFor(done: (messages: ReceivedMessage[]) => boolean, timeoutMs?: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

/**
 * A real kafkajs consumer (own group, from the beginning) that collects what arrives on the
 * topics. It rides out broker stops: kafkajs reconnects and the consumer restarts.
 */
export async function collectMessages(brokers: string[], topicNames: string[] = Object.values(eventTopics)): Promise<MessageCollector> {
  const kafka = new Kafka({
    clientId: 'test-collector',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1000,
    retry: { retries: 30, initialRetryTime: 100, maxRetryTime: 1000 },
  });
  const consumer = kafka.consumer({ groupId: `test-collector-${process.pid}-${Math.random().toString(36).slice(2)}`, maxWaitTimeInMs: 100 });
  const messages: ReceivedMessage[] = [];
  await consumer.connect();
  await consumer.subscribe({ topics: topicNames, fromBeginning: true });
  let joined!: () => void;
  const groupJoined = new Promise<void>((resolve) => (joined = resolve));
  consumer.on(consumer.events.GROUP_JOIN, () => joined());
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = Buffer.isBuffer(v) ? v.toString() : String(v);
      messages.push({ topic, partition, offset: message.offset, key: message.key?.toString() ?? null, value: message.value?.toString() ?? null, headers });
    },
  });
  await groupJoined;
  return {
    messages,
    async waitFor(done, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!done(messages)) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for Kafka messages (${messages.length} received)`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return messages;
    },
    close: () => consumer.disconnect(),
  };
}

/**
 * Settings for a relay (or a fleet) under test against the mock broker: its address and short
 * timeouts, poll interval and backoff, so a test sees failures and recoveries within seconds.
 */
export function fastRelaySettings(brokers: string[]): Record<string, string> {
  return {
    KAFKA_BROKERS: brokers.join(','),
    KAFKA_CONNECTION_TIMEOUT_MS: '500',
    KAFKA_REQUEST_TIMEOUT_MS: '2000',
    OUTBOX_RELAY_POLL_INTERVAL_MS: '50',
    OUTBOX_RELAY_BACKOFF_MIN_MS: '100',
    OUTBOX_RELAY_BACKOFF_MAX_MS: '800',
  };
}
