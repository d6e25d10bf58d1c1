/** The email family as the apps use it (the only file of the family they may import). */
export { emailComponents } from './worker.js';
export { emailDeadLetterHook } from './dead-letters.js';
export { registerEmailRetentionMetrics, runEmailRetention } from './run-retention.js';
export type { ContentRetentionResult } from './process-retention.js';
