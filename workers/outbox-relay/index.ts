/** The outbox-relay family as the apps use it (the only file of the family they may import). */
export { outboxRelayComponents } from './worker.js';
