export * from './clock.js';
export * from './component.js';
export * from './context.js';
export * from './worker-component.js';
export * from './readiness.js';
export * from './resume-after-outage.js';
export * from './within.js';
