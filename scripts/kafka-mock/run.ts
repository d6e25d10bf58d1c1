/**
 * Runs the Kafka mock broker (behind the test proxy) for local development:
 *   npx tsx scripts/kafka-mock/run.ts [--port 9092] [--secure scram-sha-512|scram-sha-256|plain] [topic[:partitions] ...]
 * Prints KAFKA_BROKERS=host:port and runs until Ctrl-C. Topics default to the event topics. The
 * port is a free one the system picks, unless --port names one (a fleet's KAFKA_BROKERS that
 * stays the same across restarts of the mock).
 * Lines on stdin simulate failures: `stop` / `start` (the broker down, refusing connections,
 * and back), `hang` (it accepts connections and requests but answers nothing; `hang writes`:
 * it still writes the batches it gets, only the answers are lost), `resume` (answers again),
 * `errors <api key> <count> <error code>` (the next <count> requests of that API, 0: Produce,
 * answered with that Kafka error code).
 * `--secure <mechanism>` also opens a TLS + SASL listener (a throwaway CA and certificate, user
 * `fleet`, a random password) and prints the KAFKA_SSL and KAFKA_SASL_ settings that reach it.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { defaultMockTopics, startKafkaMock } from '../../libs/testing/kafka-mock.js';
import type { SaslMechanism } from '../../libs/testing/kafka-proxy.js';
import { makeTestCertificates } from '../../libs/testing/tls-certs.js';

const args = process.argv.slice(2);
const at = args.indexOf('--secure');
const mechanism = at >= 0 ? args.splice(at, 2)[1] : undefined;
if (mechanism !== undefined && !['plain', 'scram-sha-256', 'scram-sha-512'].includes(mechanism)) {
  process.stderr.write(`--secure: expected plain, scram-sha-256 or scram-sha-512 (got ${JSON.stringify(mechanism ?? '')})\n`);
  process.exit(2);
}
const portAt = args.indexOf('--port');
const portArg = portAt >= 0 ? args.splice(portAt, 2)[1] : undefined;
const port = portArg === undefined ? undefined : Number(portArg);
if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536)) {
  process.stderr.write(`--port: expected a port number (got ${JSON.stringify(portArg ?? '')})\n`);
  process.exit(2);
}
const topics = args.map((arg) => {
  const [name, partitions] = arg.split(':');
  return { name: name!, partitions: partitions ? Number(partitions) : 1 };
});
const certs = mechanism ? await makeTestCertificates() : null;
const password = randomBytes(12).toString('base64url');
const mock = await startKafkaMock({
  topics: topics.length ? topics : defaultMockTopics,
  ...(port !== undefined ? { port } : {}),
  secure: certs ? { tls: { cert: certs.serverCert, key: certs.serverKey }, sasl: { mechanism: mechanism as SaslMechanism, username: 'fleet', password } } : undefined,
});
process.stdout.write(`KAFKA_BROKERS=${mock.brokers.join(',')}\n`);
if (certs && mock.secure) {
  process.stdout.write(
    `\n# the TLS + SASL listener:\nKAFKA_BROKERS=${mock.secure.brokers.join(',')}\nKAFKA_SSL=true\nKAFKA_SSL_CA_FILE=${certs.caFile}\n` +
      `KAFKA_SASL_MECHANISM=${mechanism}\nKAFKA_SASL_USERNAME=fleet\nKAFKA_SASL_PASSWORD=${password}\n`,
  );
}
const stop = () =>
  void mock
    .close()
    .then(() => certs && rm(certs.dir, { recursive: true, force: true }))
    .then(() => process.exit(0));
const commands: Record<string, (args: string[]) => Promise<void> | void> = {
  stop: () => mock.stop(),
  start: () => mock.start(),
  hang: (a) => mock.hang({ writes: a[0] === 'writes' }),
  resume: () => mock.resume(),
  errors: ([api, count, code]) => mock.pushErrors(Number(api), Number(code), Number(count)),
};
createInterface({ input: process.stdin }).on('line', (line) => {
  const [name, ...rest] = line.trim().split(/\s+/);
  if (!name) return;
  const command = commands[name];
  if (!command) return void process.stderr.write(`unknown command ${name}: ${Object.keys(commands).join(', ')}\n`);
  void Promise.resolve(command(rest)).then(
    () => process.stdout.write(`${line.trim()}: done\n`),
    (err: Error) => process.stderr.write(`${line.trim()}: ${err.message}\n`),
  );
});
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
