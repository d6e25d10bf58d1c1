/**
 * Runs the Kafka mock broker (behind the test proxy) for local development:
 *   npx tsx scripts/kafka-mock/run.ts [topic[:partitions] ...]
 * Prints KAFKA_BROKERS=host:port and runs until Ctrl-C. Topics default to the event topics.
 */
import { defaultMockTopics, startKafkaMock } from '../../libs/testing/kafka-mock.js';

const topics = process.argv.slice(2).map((arg) => {
  const [name, partitions] = arg.split(':');
  return { name: name!, partitions: partitions ? Number(partitions) : 1 };
});
const mock = await startKafkaMock({ topics: topics.length ? topics : defaultMockTopics });
process.stdout.write(`KAFKA_BROKERS=${mock.brokers.join(',')}\n`);
const stop = () => void mock.close().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
