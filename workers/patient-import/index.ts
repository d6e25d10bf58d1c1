/** The patient-import family as the apps use it (the only file of the family they may import). */
export { bucketPollHandlers, patientImportHandlers, retentionHandlers } from './worker.js';
export { patientImportDeadLetterHook, restoreDeadLetters } from './dead-letters.js';
export { importLocalFile } from './import-local-file.js';
export { signingWarning, warnIfSignaturesUnchecked } from './signing-warning.js';
export { runPoll } from './run-poll.js';
export { runRetention } from './run-retention.js';
export { removeStaleTempCopies } from './stale-temp-copies.js';
export { unrecordedCopies, type UnrecordedCopies } from './unrecorded-copies.js';
export { failureNextStep, failureRemedy, newerImportNextStep, paymentReferenceCollision, type NewerImport } from './failure-remedy.js';
export type { PollResult } from './process-bucket-poll.js';
export type { RetentionResult } from './process-retention.js';
