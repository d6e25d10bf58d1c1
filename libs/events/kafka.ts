import { Kafka, Partitioners, logLevel as kafkaLogLevel, type Admin, type Producer, type SASLOptions, type logCreator } from 'kafkajs';
import type { Logger } from '../log/index.js';
import { within } from '../runtime/within.js';
import { topics, type EventEnvelope } from './index.js';

/**
 * Our own small port to Kafka. The relay and the CLI only see this, so the client library
 * (kafkajs today, which is in maintenance mode; @confluentinc/kafka-javascript offers a
 * KafkaJS-compatible API) can be swapped in this one file.
 */
export interface OutgoingEvent {
  topic: string;
  /** Kafka message key: the entity id (same key -> same partition -> order kept). */
  key: string;
  /** The JSON envelope. */
  value: string;
  headers: Record<string, string>;
  /** When the event happened (the message timestamp). */
  timestamp?: Date;
}

export interface EventPublisher {
  connect(): Promise<void>;
  /**
   * Publishes the batch in order, with acknowledgement from all in-sync replicas. Resolves
   * when every message is acknowledged; rejects if any is not (some may have been written:
   * publishing the batch again is safe, consumers drop repeated event ids). `refusalOf(err)`
   * tells whether Kafka refused a message for good or was unreachable; a TopicMissingError
   * says Kafka answered but has no topic for some of the events (`missingTopicsOf(err)`).
   */
  publish(batch: OutgoingEvent[]): Promise<void>;
  /** Asks the cluster for its metadata: resolves when Kafka answers, rejects when it does not. */
  probe(): Promise<void>;
  disconnect(): Promise<void>;
  /** Whether the last connect, publish or probe succeeded. */
  healthy(): boolean;
}

export const EVENT_ID_HEADER = 'event-id';
export const EVENT_TYPE_HEADER = 'event-type';

/** What the relay reads from an outbox row to build a message. */
export interface StoredEvent {
  eventId: string;
  eventType: string;
  topic: string;
  key: string;
  occurredAt: Date;
  /** The envelope as JSON text (built by PostgreSQL when the relay reads; see `envelopeJson`). */
  envelope: string;
}

/** The envelope of DOMAIN.md section 4 as JSON text, built from an outbox row's fields. */
export function envelopeJson(e: { eventId: string; eventType: string; version: number; producer: string; payload: Record<string, unknown>; occurredAt: Date }): string {
  const envelope: EventEnvelope = {
    eventId: e.eventId,
    eventType: e.eventType,
    version: e.version,
    timestamp: e.occurredAt.toISOString(),
    producer: e.producer,
    payload: e.payload,
  };
  return JSON.stringify(envelope);
}

/** The Kafka message for a stored event: the envelope as value, the entity id as key. */
export function outgoingEvent(e: StoredEvent): OutgoingEvent {
  return {
    topic: e.topic,
    key: e.key,
    value: e.envelope,
    headers: { [EVENT_ID_HEADER]: e.eventId, [EVENT_TYPE_HEADER]: e.eventType, 'content-type': 'application/json' },
    timestamp: e.occurredAt,
  };
}

/**
 * Kafka error types that are about the connection, the client or the producer's state, not
 * about the messages: a publish failing with one of these is an outage (retry with backoff),
 * even though kafkajs marks them non-retriable.
 */
const NOT_ABOUT_THE_MESSAGES = new Set([
  // protocol error types (KafkaJSProtocolError.type)
  // The broker's own trouble (kafkajs: non-retriable): parking on it parked every event of the
  // batch, each sent alone got the same answer, and held their keys until an operator came.
  'BROKER_NOT_AVAILABLE',
  'UNKNOWN', // UNKNOWN_SERVER_ERROR: an exception in the broker, not a verdict on the message
  'CLUSTER_AUTHORIZATION_FAILED',
  'SASL_AUTHENTICATION_FAILED',
  'UNSUPPORTED_SASL_MECHANISM',
  'ILLEGAL_SASL_STATE',
  'UNSUPPORTED_VERSION',
  'INVALID_REQUIRED_ACKS',
  'UNSUPPORTED_COMPRESSION_TYPE',
  'OUT_OF_ORDER_SEQUENCE_NUMBER',
  'DUPLICATE_SEQUENCE_NUMBER',
  'INVALID_PRODUCER_EPOCH',
  'INVALID_PRODUCER_ID_MAPPING',
  'UNKNOWN_PRODUCER_ID',
  'PRODUCER_FENCED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  // kafkajs error classes (Error.name)
  'KafkaJSSASLAuthenticationError',
  'KafkaJSServerDoesNotSupportApiKey',
  'KafkaJSNotImplemented',
  'KafkaJSTimeout',
  'KafkaJSLockTimeout',
  'KafkaJSInvariantViolation',
]);

/** kafkajs's wrappers around the error that actually happened (in `cause`). */
const WRAPPERS = new Set(['KafkaJSNonRetriableError', 'KafkaJSNumberOfRetriesExceeded']);

/**
 * Whether a failed publish means Kafka refused the message(s) for good (sending them again
 * cannot work), as opposed to an outage (broker down, timeouts, authentication): returns the
 * refusal's code (the Kafka error type, e.g. `MESSAGE_TOO_LARGE`, `INVALID_RECORD`,
 * `TOPIC_AUTHORIZATION_FAILED`, else the error class name), or null for an outage.
 *
 * Decided from kafkajs's error classes, never from message text: the error (under kafkajs's
 * wrappers) must say `retriable: false` and not be one of NOT_ABOUT_THE_MESSAGES. Careful:
 * kafkajs reports a broker that stayed down as `KafkaJSNumberOfRetriesExceeded`, which is
 * itself `retriable: false`; that is an outage, whatever the wrapped error says.
 */
export function refusalOf(err: unknown): string | null {
  let e = err as { name?: unknown; type?: unknown; retriable?: unknown; cause?: unknown } | null | undefined;
  for (let depth = 0; e && typeof e === 'object' && depth < 10; depth++) {
    if (e.name === 'KafkaJSNumberOfRetriesExceeded') return null;
    if (typeof e.name === 'string' && WRAPPERS.has(e.name) && e.cause && e.cause !== e) {
      e = e.cause as typeof e;
      continue;
    }
    if (e.retriable !== false) return null;
    const code = typeof e.type === 'string' && e.type ? e.type : typeof e.name === 'string' && e.name ? e.name : 'Error';
    if (NOT_ABOUT_THE_MESSAGES.has(code) || (typeof e.name === 'string' && NOT_ABOUT_THE_MESSAGES.has(e.name))) return null;
    return code;
  }
  return null;
}

/**
 * Kafka answered, but has no topic for some events of the batch: it was never created (`fleet
 * events setup` creates the event topics at deploy time) or was deleted. Not a refusal of the
 * events: they wait and go out once the topic exists.
 */
export class TopicMissingError extends Error {
  override name = 'TopicMissingError';
  constructor(
    readonly topics: string[],
    cause: unknown,
  ) {
    super(`no topic ${topics.join(', ')} on Kafka (create it: fleet events setup)`, { cause });
  }
}

/** The topics Kafka does not have, when a failed publish (or an error wrapping it) is a TopicMissingError; else null. */
export function missingTopicsOf(err: unknown): string[] | null {
  let e = err;
  for (let depth = 0; e && typeof e === 'object' && depth < 10; depth++) {
    if (e instanceof TopicMissingError) return e.topics;
    e = (e as { cause?: unknown }).cause;
  }
  return null;
}

/** Whether kafkajs's error, or one it wraps, is the broker's UNKNOWN_TOPIC_OR_PARTITION. */
function isUnknownTopic(err: unknown): boolean {
  let e = err as { type?: unknown; cause?: unknown } | null | undefined;
  for (let depth = 0; e && typeof e === 'object' && depth < 10; depth++) {
    if (e.type === 'UNKNOWN_TOPIC_OR_PARTITION') return true;
    e = e.cause as typeof e;
  }
  return false;
}

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  connectionTimeoutMs: number;
  requestTimeoutMs: number;
  /** TLS to the brokers (PEM texts; no `ca`: Node's built-in CAs). Undefined: plain TCP. */
  tls?: { ca?: string; cert?: string; key?: string };
  /** SASL authentication on every connection. */
  sasl?: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string; password: string };
  /** Client-side retries of one publish before it rejects and the caller backs off. */
  retries?: number;
  /**
   * The publisher's own limit on waiting for Kafka (connecting, a publish, a probe): past it
   * the call rejects with KafkaNoAnswerError and the client is dropped for a new one. Without
   * it a broker that accepts requests but never answers is waited for requestTimeoutMs per
   * request, times kafkajs's retries (1.5 minutes with the defaults). Undefined: no such limit.
   */
  answerTimeoutMs?: number;
}

/**
 * Kafka did not answer within the publisher's limit (`answerTimeoutMs`): a hung broker, or a
 * network that drops packets. An outage, never a refusal (`refusalOf` returns null). A publish
 * that ends so may still have been written by the broker: sending the batch again is safe
 * (consumers drop repeated event ids).
 */
export class KafkaNoAnswerError extends Error {
  override name = 'KafkaNoAnswerError';
  constructor(
    readonly operation: 'connect' | 'publish' | 'probe',
    readonly timeoutMs: number,
  ) {
    super(`no answer from Kafka within ${timeoutMs} ms (${operation}): its connections are dropped and made again`);
  }
}

/** kafkajs logs go to pino at debug level: the relay logs outages itself, once per state change. */
function pinoLogCreator(log: Logger): logCreator {
  return () =>
    ({ namespace, level, log: entry }) => {
      const { message, ...extra } = entry;
      const fields = { component: 'kafkajs', namespace, kafkaLevel: kafkaLogLevel[level], error: extra.error, broker: extra.broker };
      if (level === kafkaLogLevel.NOTHING) return;
      log.debug(fields, message);
    };
}

export function createKafka(settings: KafkaSettings, log: Logger): Kafka {
  return new Kafka({
    clientId: settings.clientId,
    brokers: settings.brokers,
    ssl: settings.tls && Object.fromEntries(Object.entries(settings.tls).filter(([, v]) => v !== undefined)),
    sasl: settings.sasl && (settings.sasl as SASLOptions),
    connectionTimeout: settings.connectionTimeoutMs,
    requestTimeout: settings.requestTimeoutMs,
    retry: { retries: settings.retries ?? 2, initialRetryTime: 200, maxRetryTime: 2000 },
    logLevel: kafkaLogLevel.INFO,
    logCreator: pinoLogCreator(log),
  });
}

/**
 * kafkajs implementation: idempotent producer (acks from all in-sync replicas, one request
 * in flight so order within a partition holds), entity id as key, event id and type as
 * headers. After a failed publish the producer is replaced by a fresh one (new producer id),
 * so a re-send never collides with sequence numbers of the failed attempt.
 *
 * With `answerTimeoutMs`, a connect, publish or probe that Kafka has not answered by then
 * rejects with KafkaNoAnswerError, and its producer or admin client is dropped: the next call
 * makes a new one on new connections (kafkajs keeps a timed-out request's connection and
 * retries on it). The dropped client is disconnected once its work in hand has settled (kafkajs
 * ends it after its own requestTimeout and retries; a late answer is ignored). It may still get
 * its batch written (the broker wrote it but its answer was lost, or arrives late): that is a
 * failed publish like any other, sent again by the next producer with the same event ids; the
 * dropped producer only ever holds that one batch, so it writes nothing the relay has not sent
 * again, or will, before anything later. A call that ran out doubles the limit of the next ones
 * (connects, publishes and probes alike, up to kafkajs's own requestTimeoutMs), and one answered
 * within the base limit sets it back: a broker that is only slow (every answer after the limit)
 * is then waited for, instead of being cut off and sent the same batch again and again.
 */
export function kafkajsPublisher(settings: KafkaSettings, log: Logger): EventPublisher {
  const kafka = createKafka(settings, log);
  let producer: Producer | null = null;
  let admin: Admin | null = null;
  let ok = false;
  let broken = false;
  const baseLimit = settings.answerTimeoutMs;
  // kafkajs fails a request itself after requestTimeoutMs: waiting longer than that gains nothing.
  const maxLimit = Math.max(baseLimit ?? 0, settings.requestTimeoutMs);
  /**
   * The limit now: each call Kafka left unanswered doubles it (up to maxLimit), one answered
   * within the base limit sets it back. For connecting as for publishing and probing: a broker
   * that is only slow gets a new producer connected and its batch through, instead of being cut
   * off (and sent the same batch) again and again.
   */
  let limit = baseLimit;

  /**
   * `work` on `client`, within the limit (none without `answerTimeoutMs`). Past it: rejects with
   * KafkaNoAnswerError, `onDrop` forgets the client, which is disconnected once `work` settles.
   */
  const answered = async <T>(operation: KafkaNoAnswerError['operation'], client: Producer | Admin, work: Promise<T>, onDrop: () => void): Promise<T> => {
    const ms = limit;
    if (ms === undefined || baseLimit === undefined) return work;
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        work,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new KafkaNoAnswerError(operation, ms)), ms);
        }),
      ]);
      if (Date.now() - started <= baseLimit) limit = baseLimit;
      return result;
    } catch (err) {
      if (err instanceof KafkaNoAnswerError) {
        limit = Math.min(Math.max(limit ?? ms, ms * 2), maxLimit);
        onDrop();
        void work.then(
          () => client.disconnect(),
          () => client.disconnect(),
        ).catch(() => {});
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  };

  const ensureAdmin = async (): Promise<Admin> => {
    if (!admin) {
      const a = kafka.admin();
      await answered('connect', a, a.connect(), () => {});
      admin = a;
    }
    return admin;
  };
  const dropAdmin = (a: Admin) => () => {
    if (admin === a) admin = null;
  };

  /**
   * A publish failed with UNKNOWN_TOPIC_OR_PARTITION (which kafkajs retries, then gives up on):
   * ask the cluster for its topic list (a request that never creates a topic) and, if some
   * topics of the batch are not in it, say so with a TopicMissingError. Otherwise (the topic is
   * there: a partition was moving) the original error stands.
   */
  const explain = async (err: unknown, batch: OutgoingEvent[]): Promise<unknown> => {
    if (!isUnknownTopic(err)) return err;
    try {
      const a = await ensureAdmin();
      const existing = new Set(await answered('publish', a, a.listTopics(), dropAdmin(a)));
      const missing = [...new Set(batch.map((m) => m.topic))].filter((t) => !existing.has(t)).sort();
      return missing.length ? new TopicMissingError(missing, err) : err;
    } catch {
      return err;
    }
  };

  const newProducer = () =>
    kafka.producer({
      // The topics are made by `fleet events setup` with their partitions and replication; a
      // broker that creates a missing one on a metadata request would use its own defaults (one
      // replica, say) and hide the mistake: the relay reports it instead (TopicMissingError).
      allowAutoTopicCreation: false,
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { retries: settings.retries ?? 2, initialRetryTime: 200, maxRetryTime: 2000 },
    });

  const ensureProducer = async (): Promise<Producer> => {
    if (producer && broken) {
      const old = producer;
      producer = null;
      await old.disconnect().catch(() => {});
    }
    if (!producer) {
      const p = newProducer();
      await answered('connect', p, p.connect(), () => {});
      producer = p;
      broken = false;
    }
    return producer;
  };

  const track = async <T>(fn: () => Promise<T>, onFail?: () => void): Promise<T> => {
    try {
      const result = await fn();
      ok = true;
      return result;
    } catch (err) {
      ok = false;
      onFail?.();
      throw err;
    }
  };

  return {
    connect: () =>
      track(
        async () => void (await ensureProducer()),
        () => (broken = true),
      ),
    publish: (batch) =>
      track(
        async () => {
          if (batch.length === 0) return;
          const p = await ensureProducer();
          const byTopic = new Map<string, OutgoingEvent[]>();
          for (const m of batch) {
            const list = byTopic.get(m.topic);
            if (list) list.push(m);
            else byTopic.set(m.topic, [m]);
          }
          try {
            const sending = p.sendBatch({
              acks: -1,
              topicMessages: [...byTopic].map(([topic, messages]) => ({
                topic,
                messages: messages.map((m) => ({
                  key: m.key,
                  value: m.value,
                  headers: m.headers,
                  ...(m.timestamp ? { timestamp: String(m.timestamp.getTime()) } : {}),
                })),
              })),
            });
            await answered('publish', p, sending, () => {
              if (producer === p) producer = null;
            });
          } catch (err) {
            throw await explain(err, batch);
          }
        },
        () => (broken = true),
      ),
    probe: () =>
      track(async () => {
        const a = await ensureAdmin();
        await answered('probe', a, a.describeCluster(), dropAdmin(a));
      }),
    async disconnect() {
      const p = producer;
      const a = admin;
      producer = null;
      admin = null;
      const closing = Promise.allSettled([p?.disconnect(), a?.disconnect()]);
      // kafkajs's disconnect waits for the requests in flight: a hung broker would hold a shutdown up to requestTimeoutMs.
      if (baseLimit === undefined) await closing;
      else await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, baseLimit).unref())]);
    },
    healthy: () => ok,
  };
}

/** The topics the fleet publishes to, created at deploy time by `fleet events setup`. */
export const eventTopicNames: string[] = Object.values(topics);

export interface TopicSetupResult {
  topic: string;
  outcome: 'created' | 'exists';
}

export class TopicSetupError extends Error {
  override name = 'TopicSetupError';
  constructor(
    message: string,
    readonly code: 'not-supported' | 'unreachable' | 'failed',
  ) {
    super(message);
  }
}

/**
 * Creates the event topics (deploy time, never on the hot path); existing topics are left as they are.
 * `answerTimeoutMs`: how long connecting and listing the topics may go unanswered (a hung broker,
 * a network that drops packets) before it fails as unreachable; without it kafkajs's own timeouts
 * and retries held a deploy ~30 s and then said only "Broker not connected".
 */
export async function setupTopics(
  settings: KafkaSettings,
  log: Logger,
  opts: { partitions: number; replicationFactor: number; answerTimeoutMs?: number },
): Promise<TopicSetupResult[]> {
  const admin = createKafka({ ...settings, retries: settings.retries ?? 1 }, log).admin();
  const at = `kafka not reachable at ${settings.brokers.join(',')} (KAFKA_BROKERS)`;
  let unanswered = false;
  const answered = async <T>(work: Promise<T>, step: string): Promise<T> => {
    const ms = opts.answerTimeoutMs;
    if (ms === undefined) return work;
    let settled = false;
    try {
      return await within(work.finally(() => (settled = true)), ms);
    } catch (err) {
      if (settled) throw err;
      unanswered = true;
      throw new Error(`${(err as Error).message} (${step})`, { cause: err });
    }
  };
  try {
    let existing: Set<string>;
    try {
      await answered(admin.connect(), 'connect');
      existing = new Set(await answered(admin.listTopics(), 'list topics'));
    } catch (err) {
      throw new TopicSetupError(`${at}: ${(err as Error).message}`, 'unreachable');
    }
    const missing = eventTopicNames.filter((t) => !existing.has(t));
    if (missing.length) {
      try {
        await admin.createTopics({
          waitForLeaders: true,
          topics: missing.map((topic) => ({ topic, numPartitions: opts.partitions, replicationFactor: opts.replicationFactor })),
        });
      } catch (err) {
        if ((err as Error).name === 'KafkaJSServerDoesNotSupportApiKey') {
          throw new TopicSetupError(
            `the broker at ${settings.brokers.join(',')} does not implement CreateTopics (librdkafka's mock broker does not); ` +
              `create the topics ${missing.join(', ')} on the broker itself`,
            'not-supported',
          );
        }
        throw new TopicSetupError(`creating topics ${missing.join(', ')} failed: ${(err as Error).message}`, 'failed');
      }
    }
    return eventTopicNames.map((topic) => ({ topic, outcome: missing.includes(topic) ? 'created' : 'exists' }));
  } finally {
    // Disconnecting waits for the unanswered call: not waited for (the command ends with its error).
    const closing = admin.disconnect().catch(() => {});
    if (!unanswered) await closing;
  }
}
