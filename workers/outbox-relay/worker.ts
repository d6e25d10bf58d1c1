import { hostname } from 'node:os';
import { Counter, Gauge } from 'prom-client';
import { outboxBacklog, outboxOldestAgeSeconds, prunePublished, relayLeases } from '../../libs/db/repositories/outbox-relay.js';
import { kafkajsPublisher, type EventPublisher } from '../../libs/events/kafka.js';
import { collectedGauge, scrapeRead } from '../../libs/metrics/index.js';
import { brokerAddresses, recordOutboxRelayStatus, removeOutboxRelayStatus, RELAY_STATUS_HEARTBEAT_MS } from '../../libs/queues/index.js';
import { settlesWithin, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createOutboxRelay, type RelayRole } from './relay.js';

/**
 * The `outbox-relay` role: publishes the transactional outbox to Kafka. Run it in as many
 * processes as you like; one publishes at a time (the lease holder), the others stand by.
 */
export function outboxRelayComponents(ctx: FleetContext, opts: { publisher?: EventPublisher | null } = {}): Component[] {
  const { config, log: rootLog, metrics, database, clock } = ctx;
  const log = rootLog.child({ component: 'outbox-relay' });
  const publisher =
    opts.publisher !== undefined
      ? opts.publisher
      : config.kafka.brokers
        ? kafkajsPublisher({ ...config.kafka, brokers: config.kafka.brokers, answerTimeoutMs: config.outbox.relayKafkaTimeoutMs }, log)
        : null;

  // Lag figures are read from PostgreSQL when Prometheus scrapes; while PostgreSQL cannot be read
  // (or not within the scrape's wait) they are left out and the scrape still answers. The lag, on
  // which FleetOutboxLag rests, is read on its own: counting a backlog of millions takes seconds,
  // finding its oldest event does not, so the lag stays when the counts are left out.
  const readBacklog = scrapeRead(
    () => outboxBacklog(database, clock.now()),
    (err) => log.warn({ err }, 'metrics: could not read the outbox backlog'),
  );
  const readLag = scrapeRead(
    () => outboxOldestAgeSeconds(database, clock.now()),
    (err) => log.warn({ err }, 'metrics: could not read the outbox lag'),
  );
  collectedGauge(metrics, 'fleet_outbox_lag_seconds', 'Age of the oldest outbox event waiting to be published in seconds (0 when none wait; parked ones not counted)', [], async () => {
    const lag = await readLag();
    return lag === null ? [] : [{ labels: {}, value: lag }];
  });
  collectedGauge(metrics, 'fleet_outbox_unpublished', 'Outbox events waiting to be published to Kafka (parked ones not counted)', [], async () => {
    const b = await readBacklog();
    return b ? [{ labels: {}, value: b.unpublished }] : [];
  });
  collectedGauge(
    metrics,
    'fleet_outbox_parked',
    'Outbox events parked: refused by Kafka for good, or held behind a refused event of their key (fleet events parked)',
    [],
    async () => {
      const b = await readBacklog();
      return b ? [{ labels: {}, value: b.parked }] : [];
    },
  );
  const published = new Counter({
    name: 'fleet_outbox_published_total',
    help: 'Outbox events published to Kafka by this process',
    labelNames: ['topic'],
    registers: [metrics.registry],
  });
  const failures = new Counter({
    name: 'fleet_outbox_publish_failures_total',
    help: 'Publish attempts of an outbox batch that Kafka did not acknowledge',
    registers: [metrics.registry],
  });
  const leader = new Gauge({ name: 'fleet_outbox_relay_leader', help: '1 while this process is the publishing relay', registers: [metrics.registry] });
  const kafkaUp = new Gauge({
    name: 'fleet_outbox_kafka_up',
    help: '1 when Kafka answered the relay last time, 0 when it did not (absent until known); a missing topic is an answer (see fleet_outbox_topic_missing)',
    registers: [metrics.registry],
  });
  // prom-client exports a gauge without labels at 0 from the start: that read as "Kafka down"
  // (FleetKafkaDown after 15 minutes) on a relay with Kafka off by configuration, which never
  // asks Kafka, and on one that has not reached PostgreSQL yet. Absent until Kafka answered or not.
  kafkaUp.remove();
  const topicMissing = new Gauge({
    name: 'fleet_outbox_topic_missing',
    help: '1 for each topic the leading relay has events for that Kafka says it does not have (create it: fleet events setup); absent otherwise',
    labelNames: ['topic'],
    registers: [metrics.registry],
  });

  // Kafka deliberately off (no KAFKA_BROKERS, e.g. before the cluster exists): the alerts for a
  // missing relay and for lag stand down, and one alert says that events wait for it.
  new Gauge({
    name: 'fleet_outbox_kafka_configured',
    help: '1 when KAFKA_BROKERS is set for the outbox relay, 0 when Kafka is off and events stay in the outbox',
    registers: [metrics.registry],
  }).set(publisher ? 1 : 0);

  // What this relay does, recorded in Redis for the CLI (fleet status, daily, events stats), whose
  // own environment need not be the fleet's: written on every change and every 15 s.
  const processName = `curavani-fleet${config.instance ? `:${config.instance}` : ''}:outbox-relay@${hostname()}:${process.pid}`;
  let lastPublishedAt: Date | null = null;
  let heartbeat: NodeJS.Timeout | null = null;
  let recordFailing = false;
  const record = () => {
    const down = relay.kafkaDown();
    recordOutboxRelayStatus(ctx.queues, {
      process: processName,
      role: relay.role(),
      brokers: brokerAddresses(publisher ? config.kafka.brokers : null),
      kafkaUp: relay.kafkaUp(),
      kafkaDownSince: down?.since.toISOString() ?? null,
      kafkaError: down?.error ?? null,
      missingTopics: relay.missingTopics(),
      lastPublishedAt: lastPublishedAt?.toISOString() ?? null,
      updatedAt: clock.now().toISOString(),
    }).then(
      () => void (recordFailing = false),
      (err: unknown) => {
        // Redis away: said once (the workers and /ready say the rest); the next heartbeat writes it again.
        if (!recordFailing) log.debug({ err }, 'outbox relay: could not record its state in Redis');
        recordFailing = true;
      },
    );
  };

  const leases = relayLeases(database);
  const relay = createOutboxRelay(
    {
      acquireLease: () => leases.acquire(),
      publisher,
      prunePublished: (olderThan) => prunePublished(database, olderThan),
      clock,
      log,
      onBatch: (r) => {
        for (const [topic, n] of Object.entries(r.byTopic)) published.inc({ topic }, n);
        if (r.published > 0) lastPublishedAt = clock.now();
      },
      onPublishFailure: () => failures.inc(),
      onRoleChange: (role: RelayRole) => {
        leader.set(role === 'leader' ? 1 : 0);
        if (role !== 'stopped') queueMicrotask(record);
      },
      onKafkaChange: (up) => {
        kafkaUp.set(up ? 1 : 0);
        queueMicrotask(record);
      },
      onTopicsMissing: (topics) => {
        topicMissing.reset();
        for (const topic of topics) topicMissing.set({ topic }, 1);
        queueMicrotask(record);
      },
    },
    {
      batchSize: config.outbox.relayBatchSize,
      pollIntervalMs: config.outbox.relayPollIntervalMs,
      backoffMinMs: config.outbox.relayBackoffMinMs,
      backoffMaxMs: config.outbox.relayBackoffMaxMs,
      retentionDays: config.outbox.retentionDays,
      pruneIntervalMs: 3_600_000,
      probeIntervalMs: 10_000,
    },
  );

  return [
    {
      name: 'outbox-relay',
      async start() {
        relay.start();
        record();
        heartbeat = setInterval(record, RELAY_STATUS_HEARTBEAT_MS);
        heartbeat.unref();
      },
      async stop(timeoutMs) {
        if (heartbeat) clearInterval(heartbeat);
        await relay.stop(timeoutMs);
        await leases.close();
        await settlesWithin(removeOutboxRelayStatus(ctx.queues, processName).catch(() => {}), 2_000);
      },
      ready: () => relay.ready(),
    },
  ];
}
