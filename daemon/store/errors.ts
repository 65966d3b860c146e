/**
 * Errors of the image store. One class, told apart by a stable `code` string that the API and CLI map to
 * responses and exit codes; filesystem failures at open keep the errno name (`EACCES`, `ENOTDIR`, ...) as code.
 */

export type StoreErrorCode =
  | 'IMAGE_EXISTS'
  | 'IMAGE_NOT_FOUND'
  | 'INVALID_IMAGE_NAME'
  | 'INVALID_ARGUMENT'
  | 'CORRUPT_IMAGE'
  | 'CORRUPT_STORE'
  | 'STORE_LOCKED'
  | 'STORE_CLOSED'
  | 'STORE_OPEN_FAILED'
  | 'UNSUPPORTED_STORE_FORMAT'
  | 'WRITER_CLOSED'
  | 'WRITER_FAILED';

/** errno names ('EACCES', 'ENOTDIR', ...) of filesystem failures on the data directory. */
export type ErrnoCode = `E${string}`;

export interface StoreErrorDetails {
  /** Data directory, for errors about the store itself. */
  path?: string;
  /** Image name and id, when known. */
  image?: string;
  imageId?: string;
  /** Address space and window address, for CORRUPT_IMAGE. */
  mmId?: string;
  address?: number;
  cause?: unknown;
}

export class StoreError extends Error {
  /** A StoreErrorCode, or an errno name such as 'EACCES' when the data directory could not be created or used. */
  readonly code: StoreErrorCode | ErrnoCode;
  declare readonly path?: string;
  declare readonly image?: string;
  declare readonly imageId?: string;
  declare readonly mmId?: string;
  declare readonly address?: number;

  constructor(code: StoreErrorCode | ErrnoCode, message: string, details: StoreErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'StoreError';
    this.code = code;
    if (details.path !== undefined) this.path = details.path;
    if (details.image !== undefined) this.image = details.image;
    if (details.imageId !== undefined) this.imageId = details.imageId;
    if (details.mmId !== undefined) this.mmId = details.mmId;
    if (details.address !== undefined) this.address = details.address;
  }
}

export function isStoreError(e: unknown, code?: string): e is StoreError {
  return e instanceof StoreError && (code === undefined || e.code === code);
}
