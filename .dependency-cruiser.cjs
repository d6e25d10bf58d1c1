/**
 * Import boundaries of STYLE.md, checked by `npm run lint`:
 * apps and workers import libs; libs never import apps or workers; workers never import apps or
 * each other; apps import only a worker family's public surface (workers/<family>/index.ts: what
 * the composition root wires and the CLI, HTTP app and producers call; behind it, worker.ts is the
 * thin BullMQ binding); only libs/db imports drizzle-orm; only libs/queues and workers' worker.ts
 * import bullmq; no cycles; code that ships (tsconfig.build.json) imports no devDependency.
 */
const notTests = '\\.test\\.ts$';
/** What tsconfig.build.json excludes (tests and their helpers): everything else under apps, workers and libs ships. */
const testOnly = [notTests, '^libs/testing/', '/int-harness\\.ts$', '/fixtures\\.ts$', '/fixtures/', '/test-setup\\.ts$'];
module.exports = {
  forbidden: [
    { name: 'no-cycles', severity: 'error', from: {}, to: { circular: true } },
    { name: 'libs-not-to-apps-or-workers', severity: 'error', from: { path: '^libs/' }, to: { path: '^(apps|workers)/' } },
    { name: 'workers-not-to-apps', severity: 'error', from: { path: '^workers/' }, to: { path: '^apps/' } },
    {
      name: 'workers-not-to-other-workers',
      severity: 'error',
      from: { path: '^workers/([^/]+)/' },
      to: { path: '^workers/', pathNot: '^workers/$1/' },
    },
    {
      name: 'apps-only-to-worker-family-index',
      severity: 'error',
      // tests of apps may use a worker family's test fixtures
      from: { path: '^apps/', pathNot: notTests },
      to: { path: '^workers/', pathNot: '^workers/[^/]+/index\\.ts$' },
    },
    {
      name: 'only-libs-db-imports-drizzle',
      severity: 'error',
      from: { path: '^(apps|workers|libs)/', pathNot: ['^libs/db/', notTests] },
      to: { path: 'node_modules/drizzle-orm' },
    },
    {
      name: 'only-queues-and-worker-bindings-import-bullmq',
      severity: 'error',
      from: { path: '^(apps|workers|libs)/', pathNot: ['^libs/queues/', '^workers/[^/]+/worker\\.ts$', notTests] },
      to: { path: 'node_modules/bullmq' },
    },
    {
      // The image (Dockerfile) and `npm run build` ship production dependencies only: code that
      // tsconfig.build.json compiles must not need a devDependency at run time.
      name: 'built-code-not-to-dev-dependencies',
      severity: 'error',
      from: { path: '^(apps|workers|libs)/', pathNot: testOnly },
      to: { dependencyTypes: ['npm-dev'] },
    },
    {
      // tsc compiles whatever a built file imports, excluded or not: test helpers would ship.
      name: 'built-code-not-to-test-helpers',
      severity: 'error',
      from: { path: '^(apps|workers|libs)/', pathNot: testOnly },
      to: { path: testOnly },
    },
    { name: 'no-missing-modules', severity: 'error', from: {}, to: { couldNotResolve: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: false,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js', '.json'] },
    moduleSystems: ['es6', 'cjs'],
  },
};
