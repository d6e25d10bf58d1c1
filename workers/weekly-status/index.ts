/** The weekly-status family as the apps use it (the only file of the family they may import). */
export { weeklyHandlers } from './worker.js';
export { runWeeklyFanout } from './run-fanout.js';
export { composeWeeklyEmail, previewWeeklyEmail } from './weekly-email.js';
export { weeklyStillWanted } from './still-wanted.js';
export type { FanoutResult } from './process-fanout.js';
