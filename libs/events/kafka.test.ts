import {
  KafkaJSConnectionError,
  KafkaJSNonRetriableError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSProtocolError,
  KafkaJSRequestTimeoutError,
  KafkaJSSASLAuthenticationError,
} from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { KafkaNoAnswerError, missingTopicsOf, refusalOf, TopicMissingError } from './kafka.js';

type ErrorClass = new (e: Error | string, metadata?: Record<string, unknown>) => Error;

/** What the broker's answer becomes in kafkajs (protocol/error.js: type, code, retriable). */
function kafkaProtocolError(type: string, code: number, retriable: boolean, message = `broker says ${type}`): Error {
  return new KafkaJSProtocolError(Object.assign(new Error(message), { type, code, retriable }));
}

/** How kafkajs's retrier hands a non-retriable error to the caller (retry/index.js). */
function asSendFailure(e: Error): Error {
  return new (KafkaJSNonRetriableError as unknown as ErrorClass)(e, { cause: e });
}

/** How kafkajs's retrier reports an error that stayed after its retries (a broker that stayed down). */
function asRetriesExceeded(e: Error): Error {
  return new (KafkaJSNumberOfRetriesExceeded as unknown as ErrorClass)(e, { retryCount: 2, retryTime: 800 });
}

describe('refusalOf', () => {
  it('names the refusal when Kafka will never take the message', () => {
    expect(refusalOf(asSendFailure(kafkaProtocolError('MESSAGE_TOO_LARGE', 10, false)))).toBe('MESSAGE_TOO_LARGE');
    expect(refusalOf(asSendFailure(kafkaProtocolError('INVALID_RECORD', 87, false)))).toBe('INVALID_RECORD');
    expect(refusalOf(asSendFailure(kafkaProtocolError('TOPIC_AUTHORIZATION_FAILED', 29, false)))).toBe('TOPIC_AUTHORIZATION_FAILED');
    // Unwrapped, as another client or a fake would throw it.
    expect(refusalOf(kafkaProtocolError('RECORD_LIST_TOO_LARGE', 18, false))).toBe('RECORD_LIST_TOO_LARGE');
    expect(refusalOf(new KafkaJSNonRetriableError('refused'))).toBe('KafkaJSNonRetriableError');
  });

  it('says outage (null) for retriable errors, retries exhausted, and errors about the connection or the producer', () => {
    const down = new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092');
    expect(refusalOf(down)).toBeNull();
    // kafkajs marks "retries exhausted" non-retriable: still an outage.
    expect(refusalOf(asRetriesExceeded(down))).toBeNull();
    expect(refusalOf(asRetriesExceeded(kafkaProtocolError('NOT_ENOUGH_REPLICAS', 19, true)))).toBeNull();
    expect(refusalOf(asRetriesExceeded(new (KafkaJSRequestTimeoutError as unknown as ErrorClass)('Request Produce(key: 0, version: 7) timed out')))).toBeNull();
    expect(refusalOf(asSendFailure(kafkaProtocolError('LEADER_NOT_AVAILABLE', 5, true)))).toBeNull();
    expect(refusalOf(asSendFailure(kafkaProtocolError('CLUSTER_AUTHORIZATION_FAILED', 31, false)))).toBeNull();
    expect(refusalOf(asSendFailure(kafkaProtocolError('BROKER_NOT_AVAILABLE', 8, false)))).toBeNull();
    expect(refusalOf(asSendFailure(kafkaProtocolError('UNKNOWN', -1, false)))).toBeNull();
    expect(refusalOf(asSendFailure(kafkaProtocolError('OUT_OF_ORDER_SEQUENCE_NUMBER', 45, false)))).toBeNull();
    expect(refusalOf(new (KafkaJSSASLAuthenticationError as unknown as ErrorClass)('SASL SCRAM SHA512 authentication failed'))).toBeNull();
    expect(refusalOf(asSendFailure(new TypeError('x is not a function')))).toBeNull();
    expect(refusalOf(new Error('connect ECONNREFUSED 127.0.0.1:9092'))).toBeNull();
    // The publisher's own limit ran out (a broker that does not answer): an outage.
    expect(refusalOf(new KafkaNoAnswerError('publish', 10_000))).toBeNull();
    expect(refusalOf(undefined)).toBeNull();
    expect(refusalOf('boom')).toBeNull();
  });
});

describe('missingTopicsOf', () => {
  // What kafkajs throws when the broker has no such topic, after its retries.
  const unknownTopic = asRetriesExceeded(kafkaProtocolError('UNKNOWN_TOPIC_OR_PARTITION', 3, true, 'This server does not host this topic-partition'));

  it('names the topics of a TopicMissingError, also under a wrapper; a missing topic is no refusal', () => {
    const missing = new TopicMissingError(['import-events'], unknownTopic);
    expect(missingTopicsOf(missing)).toEqual(['import-events']);
    expect(missingTopicsOf(new Error('publishing 3 event(s) failed', { cause: missing }))).toEqual(['import-events']);
    expect(missing.message).toBe('no topic import-events on Kafka (create it: fleet events setup)');
    expect(refusalOf(missing)).toBeNull();
  });

  it('is null for other failures, and for kafkajs\'s own error (the publisher first asks which topics exist)', () => {
    expect(missingTopicsOf(unknownTopic)).toBeNull();
    expect(missingTopicsOf(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092'))).toBeNull();
    expect(missingTopicsOf(undefined)).toBeNull();
  });
});
