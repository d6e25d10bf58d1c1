export * from './catalog.js';
export * from './connection.js';
export * from './queue-set.js';
export * from './dead-letter.js';
export * from './bind-worker.js';
export * from './rate-limiter.js';
export * from './schedulers.js';
export * from './last-poll.js';
