/**
 * Compares two V8 heap snapshots (e.g. scripts/drill/soak.ts --heap-snapshots-at) by constructor,
 * as DevTools' comparison view groups them: objects by constructor name, closures by function
 * name, the rest by node type ("(string)", "(array)", "(code)" ...). Prints the totals of each
 * snapshot and the classes sorted by growth of self size, with their counts.
 * `--retainers <class>` also lists, for the later snapshot, what points at that class's objects
 * (the referring class and the edge name, by count): enough to tell a cache from a leak.
 *
 *   npx tsx scripts/drill/heap-diff.ts <earlier.heapsnapshot> <later.heapsnapshot> [--top 30] [--retainers Foo,Bar]
 *
 * A snapshot is parsed whole: some 10 times its file size in memory (node --max-old-space-size).
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' }, retainers: { type: 'string' } },
});
if (positionals.length !== 2) {
  console.error('usage: heap-diff.ts <earlier.heapsnapshot> <later.heapsnapshot> [--top 30] [--retainers Foo,Bar]');
  process.exit(2);
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}
interface Parsed {
  /** Class of each node (index: node ordinal). */
  cls: string[];
  self: number[];
  /** Per class: count and self size. */
  byClass: Map<string, { n: number; size: number }>;
  raw: Snapshot;
}

async function load(file: string): Promise<Parsed> {
  const raw = JSON.parse(await readFile(file, 'utf8')) as Snapshot;
  const { node_fields: nf, node_types: [types] } = raw.snapshot.meta;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => nf.indexOf(f)) as [number, number, number];
  const cls: string[] = [];
  const self: number[] = [];
  const byClass = new Map<string, { n: number; size: number }>();
  for (let i = 0; i < raw.nodes.length; i += nf.length) {
    const type = types[raw.nodes[i + iType]!]!;
    const name = raw.strings[raw.nodes[i + iName]!]!;
    const c = type === 'object' || type === 'native' ? name : type === 'closure' ? `(closure) ${name || '(anonymous)'}` : `(${type})`;
    const size = raw.nodes[i + iSize]!;
    cls.push(c);
    self.push(size);
    const e = byClass.get(c) ?? { n: 0, size: 0 };
    e.n++;
    e.size += size;
    byClass.set(c, e);
  }
  return { cls, self, byClass, raw };
}

const mb = (b: number) => (b / 2 ** 20).toFixed(2);
// Piped into head: stop quietly once the reader has gone.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const [a, b] = [await load(positionals[0]!), await load(positionals[1]!)];
const total = (p: Parsed) => [...p.byClass.values()].reduce((s, e) => ({ n: s.n + e.n, size: s.size + e.size }), { n: 0, size: 0 });
const [ta, tb] = [total(a), total(b)];
console.log(`earlier: ${ta.n} objects, ${mb(ta.size)} MiB; later: ${tb.n} objects, ${mb(tb.size)} MiB; growth ${tb.n - ta.n} objects, ${mb(tb.size - ta.size)} MiB`);

const names = new Set([...a.byClass.keys(), ...b.byClass.keys()]);
const rows = [...names].map((c) => {
  const [x, y] = [a.byClass.get(c) ?? { n: 0, size: 0 }, b.byClass.get(c) ?? { n: 0, size: 0 }];
  return { c, n0: x.n, n1: y.n, s0: x.size, s1: y.size };
});
const top = Number(values.top);
const line = (r: (typeof rows)[number]) =>
  [String(r.n1 - r.n0).padStart(8), String(r.s1 - r.s0).padStart(10), `${r.n0} -> ${r.n1}`.padStart(22), `${mb(r.s0)} -> ${mb(r.s1)} MiB`.padStart(22), r.c.slice(0, 100)].join('  ');
console.log(`\n${'count +'.padStart(8)}  ${'bytes +'.padStart(10)}  ${'count'.padStart(22)}  ${'self size'.padStart(22)}  class (top ${top} by growth of self size)`);
for (const r of [...rows].sort((x, y) => y.s1 - y.s0 - (x.s1 - x.s0)).slice(0, top)) console.log(line(r));
console.log(`\nby growth of count (top ${top})`);
for (const r of [...rows].sort((x, y) => y.n1 - y.n0 - (x.n1 - x.n0)).slice(0, top)) console.log(line(r));
console.log(`\nshrunk most (top 10 by self size)`);
for (const r of [...rows].sort((x, y) => x.s1 - x.s0 - (y.s1 - y.s0)).slice(0, 10)) console.log(line(r));

// Retainers in the later snapshot: for every edge into an object of the class, its holder's
// class and the edge's name (property name, or [] for an element, or the edge type).
for (const target of (values.retainers ?? '').split(',').filter(Boolean)) {
  const { raw, cls } = b;
  const { node_fields: nf, edge_fields: ef, edge_types: [etypes] } = raw.snapshot.meta;
  const [iEdges] = [nf.indexOf('edge_count')];
  const [eType, eName, eTo] = ['type', 'name_or_index', 'to_node'].map((f) => ef.indexOf(f)) as [number, number, number];
  const counts = new Map<string, number>();
  let e = 0;
  for (let n = 0; n < cls.length; n++) {
    const edgeCount = raw.nodes[n * nf.length + iEdges!]!;
    for (let k = 0; k < edgeCount; k++, e += ef.length) {
      const to = raw.edges[e + eTo]! / nf.length;
      if (cls[to] !== target) continue;
      const type = etypes[raw.edges[e + eType]!]!;
      if (type === 'weak') continue;
      const nm = type === 'element' || type === 'hidden' ? `[${type}]` : type === 'property' || type === 'context' || type === 'shortcut' || type === 'internal' ? raw.strings[raw.edges[e + eName]!]! : `(${type})`;
      const key = `${cls[n]} .${nm}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  console.log(`\nretainers of ${target} in the later snapshot (holder class .edge: count)`);
  for (const [k, n] of [...counts].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${String(n).padStart(8)}  ${k.slice(0, 140)}`);
}
