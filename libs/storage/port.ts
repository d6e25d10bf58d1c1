/**
 * The bucket port: what the patient import needs from Google Cloud Storage, with a GCS
 * driver (@google-cloud/storage) and a local-folder driver that keeps generations the same
 * way, so the same pipeline runs without a cloud account.
 */
export interface StoredObject {
  bucket: string;
  /** Object name as stored (not percent-encoded). Contains patient names: never log it. */
  name: string;
  /** GCS generation as a decimal string (it exceeds 2^53). */
  generation: string;
  size: number;
  md5Hash?: string;
  crc32c?: string;
  updated: string;
}

export interface ListPage {
  items: StoredObject[];
  nextPageToken?: string;
}

export type DeleteOutcome = 'deleted' | 'precondition_failed' | 'not_found';

export interface BucketPort {
  readonly driver: 'gcs' | 'local';
  readonly bucket: string;
  /** One page of objects under a prefix. A failure throws: it is never an empty bucket. */
  list(prefix: string, opts?: { pageToken?: string; pageSize?: number }): Promise<ListPage>;
  /** Current metadata, or null when the object does not exist. */
  stat(name: string): Promise<StoredObject | null>;
  /** The bytes of exactly this generation, checksum verified. */
  download(name: string, generation: string): Promise<Buffer>;
  /** Deletes only this generation (ifGenerationMatch): a newer upload is never deleted. */
  deleteGeneration(name: string, generation: string): Promise<DeleteOutcome>;
  upload(name: string, data: Buffer | string): Promise<StoredObject>;
  /** `gs://bucket/name` (for staff emails; personal data: never for logs). */
  uri(name: string): string;
}
