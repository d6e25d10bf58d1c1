import { describe, expect, it } from 'vitest';
import { rewriteFindCoordinator, rewriteMetadata, withoutAutoTopicCreation } from './kafka-proxy.js';

const i16 = (v: number) => Buffer.from([(v >> 8) & 0xff, v & 0xff]);
const i32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
};
const str = (s: string | null) => (s === null ? i16(-1) : Buffer.concat([i16(Buffer.byteLength(s)), Buffer.from(s)]));
const frame = (...parts: Buffer[]) => {
  const body = Buffer.concat(parts);
  return Buffer.concat([i32(body.length), body]);
};

describe('kafka proxy rewrites', () => {
  it('Metadata v6: brokers advertised at the proxy, controller 0 (no such broker) becomes the real broker, topics untouched', () => {
    const topics = Buffer.concat([i32(1), i16(0), str('patient-events'), Buffer.from([0]), i32(0)]);
    const input = frame(i32(77), i32(0), i32(1), i32(1), str('127.0.0.1'), i32(40001), str(null), str('mockCluster'), i32(0), topics);
    const out = rewriteMetadata(input, 6, '127.0.0.1', 50000);
    const expected = frame(i32(77), i32(0), i32(1), i32(1), str('127.0.0.1'), i32(50000), str(null), str('mockCluster'), i32(1), topics);
    expect(out.equals(expected)).toBe(true);
  });

  it('Metadata v1: a valid controller id is kept; the size prefix follows a longer host', () => {
    const input = frame(i32(5), i32(1), i32(3), str('h'), i32(1), str('rack-a'), i32(3), i32(0));
    const out = rewriteMetadata(input, 1, 'proxy.local', 9);
    expect(out.equals(frame(i32(5), i32(1), i32(3), str('proxy.local'), i32(9), str('rack-a'), i32(3), i32(0)))).toBe(true);
    expect(out.readInt32BE(0)).toBe(out.length - 4);
  });

  it('FindCoordinator v1 points at the proxy; an error answer (node -1) is left alone', () => {
    const ok = frame(i32(9), i32(0), i16(0), str(null), i32(1), str('127.0.0.1'), i32(40001));
    expect(rewriteFindCoordinator(ok, 1, '127.0.0.1', 50000).equals(frame(i32(9), i32(0), i16(0), str(null), i32(1), str('127.0.0.1'), i32(50000)))).toBe(true);
    const err = frame(i32(9), i32(0), i16(15), str('not available'), i32(-1), str(''), i32(-1));
    expect(rewriteFindCoordinator(err, 1, '127.0.0.1', 50000).equals(err)).toBe(true);
  });

  it('Metadata requests v4+: AllowAutoTopicCreation cleared (a broker with auto.create.topics.enable=false); v0-v3 untouched', () => {
    const header = (version: number) => [i16(3), i16(version), i32(42), str('fleet')];
    const named = frame(...header(4), i32(2), str('patient-events'), str('import-events'), Buffer.from([1]));
    expect(withoutAutoTopicCreation(named).equals(frame(...header(4), i32(2), str('patient-events'), str('import-events'), Buffer.from([0])))).toBe(true);
    const all = frame(...header(6), i32(-1), Buffer.from([1]));
    expect(withoutAutoTopicCreation(all).equals(frame(...header(6), i32(-1), Buffer.from([0])))).toBe(true);
    const v2 = frame(...header(2), i32(1), str('import-events'));
    expect(withoutAutoTopicCreation(v2)).toBe(v2);
  });
});
