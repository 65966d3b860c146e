/**
 * The key space of the image store. Keys are UTF-8 strings of printable ASCII whose components are joined
 * with '!'; docs/image-store.md is the reference for what each key holds and the invariants between them.
 *
 *   store!format                 format version (JSON)
 *   store!counters               { chunks, chunkBytes } of the whole store (JSON)
 *   image!<name>                 committed image record (JSON); the catalogue that list() reads
 *   image-id!<id>                name of a committed image, for readers that hold an id
 *   pending!<id>                 writer in progress or removal in progress (JSON); garbage after a crash
 *   meta!<id>!<key>              one metadata entry (tag byte + JSON or raw bytes)
 *   map!<id>!<mmId>!<addr>       page map entry of one 64 KiB window (binary, see pagemap.ts)
 *   chunk!<sha256>               page data of one window (its non-zero pages, concatenated)
 *   chunk-ref!<sha256>!<id>      empty; image <id> references chunk <sha256>
 *
 * Ranges use the character after '!' ('"', 0x22) as exclusive upper bound. Every component that can be
 * followed by '!' (names, ids, mmIds, hashes) is restricted to characters above '"', so the range of one
 * prefix never contains keys of a longer sibling (mm "12" vs "123").
 */
import { StoreError } from './errors.js';

export const IMAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MM_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const META_KEY_RE = /^[\x21-\x7e]{1,512}$/;
const ID_RE = /^[0-9a-f]{16}$/;

export const FORMAT_KEY = 'store!format';
export const COUNTERS_KEY = 'store!counters';
export const FORMAT_VERSION = 1;

/** Half-open key range [gte, lt) of everything below `prefix` (which ends in '!'). */
export interface KeyRange {
  gte: string;
  lt: string;
}

export function below(prefix: string): KeyRange {
  return { gte: prefix, lt: prefix.slice(0, -1) + '"' };
}

export function validateImageName(name: unknown): string {
  if (typeof name !== 'string' || !IMAGE_NAME_RE.test(name)) {
    throw new StoreError(
      'INVALID_IMAGE_NAME',
      `invalid image name ${JSON.stringify(name)}: use 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit`,
    );
  }
  return name;
}

export function validateMmId(mmId: unknown): string {
  if (typeof mmId !== 'string' || !MM_ID_RE.test(mmId)) {
    throw new StoreError(
      'INVALID_ARGUMENT',
      `invalid address space id ${JSON.stringify(mmId)}: use 1-128 characters of A-Z a-z 0-9 . _ : -`,
    );
  }
  return mmId;
}

export function validateMetaKey(key: unknown): string {
  if (typeof key !== 'string' || !META_KEY_RE.test(key)) {
    throw new StoreError(
      'INVALID_ARGUMENT',
      `invalid metadata key ${JSON.stringify(key)}: use 1-512 printable ASCII characters`,
    );
  }
  return key;
}

export function validateImageId(id: unknown): string {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw new StoreError('INVALID_ARGUMENT', `invalid image id ${JSON.stringify(id)}`);
  }
  return id;
}

/** Fixed-width hex so that string order is address order. */
export function hexAddress(address: number): string {
  return address.toString(16).padStart(16, '0');
}

export const imageKey = (name: string): string => `image!${name}`;
export const imageIdKey = (id: string): string => `image-id!${id}`;
export const pendingKey = (id: string): string => `pending!${id}`;
export const metaKey = (id: string, key: string): string => `meta!${id}!${key}`;
export const mapKey = (id: string, mmId: string, window: number): string => `map!${id}!${mmId}!${hexAddress(window)}`;
export const chunkKey = (hash: string): string => `chunk!${hash}`;
export const refKey = (hash: string, id: string): string => `chunk-ref!${hash}!${id}`;

export const IMAGES = below('image!');
export const IMAGE_IDS = below('image-id!');
export const PENDING = below('pending!');
export const METAS = below('meta!');
export const MAPS = below('map!');
export const CHUNKS = below('chunk!');
export const REFS = below('chunk-ref!');

export const metaPrefix = (id: string): string => `meta!${id}!`;
export const mapImagePrefix = (id: string): string => `map!${id}!`;
export const mapMmPrefix = (id: string, mmId: string): string => `map!${id}!${mmId}!`;
export const refPrefix = (hash: string): string => `chunk-ref!${hash}!`;

/** The part of `key` after `prefix`. */
export function suffix(key: string, prefix: string): string {
  return key.slice(prefix.length);
}

/** Splits `map!<id>!<mmId>!<addr>` into its parts; undefined when the key has another shape. */
export function parseMapKey(key: string): { id: string; mmId: string; address: number } | undefined {
  const parts = key.split('!');
  if (parts.length !== 4 || parts[0] !== 'map') return undefined;
  const address = parseInt(parts[3]!, 16);
  if (!Number.isSafeInteger(address)) return undefined;
  return { id: parts[1]!, mmId: parts[2]!, address };
}

/** Splits `chunk-ref!<hash>!<id>`; undefined when the key has another shape. */
export function parseRefKey(key: string): { hash: string; id: string } | undefined {
  const parts = key.split('!');
  if (parts.length !== 3 || parts[0] !== 'chunk-ref') return undefined;
  return { hash: parts[1]!, id: parts[2]! };
}
