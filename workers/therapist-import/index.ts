/** The therapist-import family as the apps use it (the only file of the family they may import). */
import * as repo from '../../libs/db/repositories/therapist-import.js';

export { therapistImportComponents } from './worker.js';
export { restoreTherapistDeadLetters, therapistImportDeadLetterHook } from './dead-letters.js';
export { enqueueFreshTherapistFiles, enqueueTherapistFile } from './enqueue.js';
export { closeTherapistRun } from './close-run.js';
export { importTherapistFileNow, OlderScrapeError, TherapistFileError } from './import-file-now.js';
export { reportOf, type FileReport } from './process-therapist-file.js';
export { therapistImportMetrics } from './metrics.js';

/** What the scraper watcher needs of the size limit (SCRAPER_FILE_MAX_MB). */
export { FileTooLargeError, fileKindOf, NOT_REGULAR_REASON, sha256OfFile, tooLargeReason } from './file-size.js';

export { COUNT_LABELS, formatShare, isOutcomeCount, metadataDisagreementText, metadataFoundText, notReadText, outcomeKeys } from './report.js';
export { repo as therapistImportRepo };
