/**
 * A full consistency check of the store (docs/image-store.md, "Invariants"), read from one snapshot: every
 * chunk is referenced and matches its hash, every ref belongs to a known image and is backed by one of its
 * page map entries, every page map entry's chunk and ref exist, and the counters are exact.
 */
import { parseJson, type Counters, type Db } from './core.js';
import {
  CHUNKS,
  COUNTERS_KEY,
  IMAGE_IDS,
  IMAGES,
  MAPS,
  METAS,
  parseMapKey,
  parseRefKey,
  PENDING,
  REFS,
} from './keys.js';
import { chunkMatches, decodeMapEntry } from './pagemap.js';
import type { CheckReport, ImageSummary } from './types.js';

type Snapshot = ReturnType<Db['snapshot']>;

interface Scan {
  report: CheckReport;
  known: Set<string>;
  /** hash -> bitmap, from the page map entries that name it. */
  bitmaps: Map<string, number>;
  /** `${hash}!${id}` for every page map entry with data. */
  mapRefs: Set<string>;
  refCount: Map<string, number>;
}

export async function checkStore(db: Db): Promise<CheckReport> {
  const snapshot = db.snapshot();
  try {
    const scan: Scan = {
      report: { images: 0, pending: 0, chunks: 0, chunkBytes: 0, refs: 0, mapEntries: 0, problems: [] },
      known: new Set(),
      bitmaps: new Map(),
      mapRefs: new Set(),
      refCount: new Map(),
    };
    await scanCatalogue(db, snapshot, scan);
    await scanMaps(db, snapshot, scan);
    await scanRefs(db, snapshot, scan);
    await scanChunks(db, snapshot, scan);
    await checkCounters(db, snapshot, scan);
    return scan.report;
  } finally {
    await snapshot.close();
  }
}

async function* entries(db: Db, snapshot: Snapshot, range: { gte: string; lt: string }, keysOnly = false) {
  const it = db.iterator({ ...range, snapshot, values: !keysOnly, highWaterMarkBytes: 8 << 20 });
  try {
    for (;;) {
      const batch = await it.nextv(1000);
      if (batch.length === 0) return;
      yield* batch;
    }
  } finally {
    await it.close();
  }
}

async function scanCatalogue(db: Db, snapshot: Snapshot, scan: Scan): Promise<void> {
  const { report, known } = scan;
  const byId = new Map<string, string>();
  for await (const [key, value] of entries(db, snapshot, IMAGES)) {
    const summary = parseJson<ImageSummary>(value, key);
    report.images++;
    byId.set(summary.id, summary.name);
    known.add(summary.id);
  }
  const indexed = new Set<string>();
  for await (const [key, value] of entries(db, snapshot, IMAGE_IDS)) {
    const id = key.slice(IMAGE_IDS.gte.length);
    indexed.add(id);
    if (byId.get(id) !== value.toString())
      report.problems.push(`${key} names ${value.toString()}, which has another id`);
  }
  for (const [id, name] of byId)
    if (!indexed.has(id)) report.problems.push(`image ${name} (${id}) has no image-id entry`);
  for await (const [key] of entries(db, snapshot, PENDING, true)) {
    report.pending++;
    known.add(key.slice(PENDING.gte.length));
  }
  for await (const [key] of entries(db, snapshot, METAS, true)) {
    const id = key.split('!')[1]!;
    if (!known.has(id)) report.problems.push(`${key} belongs to no image or writer`);
  }
}

async function scanMaps(db: Db, snapshot: Snapshot, scan: Scan): Promise<void> {
  const { report } = scan;
  for await (const [key, value] of entries(db, snapshot, MAPS)) {
    report.mapEntries++;
    const parsed = parseMapKey(key);
    const entry = decodeMapEntry(value);
    if (parsed === undefined || entry === undefined) {
      report.problems.push(`${key} is malformed`);
      continue;
    }
    if (!scan.known.has(parsed.id)) report.problems.push(`${key} belongs to no image or writer`);
    if (entry.bitmap === 0) continue;
    const seen = scan.bitmaps.get(entry.hash);
    if (seen !== undefined && seen !== entry.bitmap)
      report.problems.push(`${key}: chunk ${entry.hash} named with two bitmaps`);
    scan.bitmaps.set(entry.hash, entry.bitmap);
    scan.mapRefs.add(`${entry.hash}!${parsed.id}`);
  }
}

async function scanRefs(db: Db, snapshot: Snapshot, scan: Scan): Promise<void> {
  const { report } = scan;
  const refs = new Set<string>();
  for await (const [key] of entries(db, snapshot, REFS, true)) {
    report.refs++;
    const parsed = parseRefKey(key);
    if (parsed === undefined) {
      report.problems.push(`${key} is malformed`);
      continue;
    }
    const pair = `${parsed.hash}!${parsed.id}`;
    refs.add(pair);
    scan.refCount.set(parsed.hash, (scan.refCount.get(parsed.hash) ?? 0) + 1);
    if (!scan.known.has(parsed.id)) report.problems.push(`${key} belongs to no image or writer`);
    if (!scan.mapRefs.has(pair)) report.problems.push(`${key} is not backed by a page map entry of ${parsed.id}`);
  }
  for (const pair of scan.mapRefs)
    if (!refs.has(pair))
      report.problems.push(`page map of ${pair.split('!')[1]} uses ${pair.split('!')[0]} without a chunk-ref`);
}

async function scanChunks(db: Db, snapshot: Snapshot, scan: Scan): Promise<void> {
  const { report } = scan;
  const present = new Set<string>();
  for await (const [key, value] of entries(db, snapshot, CHUNKS)) {
    const hash = key.slice(CHUNKS.gte.length);
    present.add(hash);
    report.chunks++;
    report.chunkBytes += value.length;
    const bitmap = scan.bitmaps.get(hash);
    if (!scan.refCount.has(hash)) report.problems.push(`chunk ${hash} has no chunk-ref (orphan)`);
    if (bitmap === undefined) report.problems.push(`chunk ${hash} is named by no page map entry`);
    else if (!chunkMatches({ present: bitmap, bitmap, hash }, value))
      report.problems.push(`chunk ${hash} does not match its hash`);
  }
  for (const hash of scan.bitmaps.keys()) if (!present.has(hash)) report.problems.push(`chunk ${hash} is missing`);
}

async function checkCounters(db: Db, snapshot: Snapshot, scan: Scan): Promise<void> {
  const { report } = scan;
  const value = await db.get(COUNTERS_KEY, { snapshot });
  if (value === undefined) {
    report.problems.push(`${COUNTERS_KEY} is missing`);
    return;
  }
  const counters = parseJson<Counters>(value, COUNTERS_KEY);
  if (counters.chunks !== report.chunks || counters.chunkBytes !== report.chunkBytes) {
    report.problems.push(
      `counters say ${counters.chunks} chunks / ${counters.chunkBytes} bytes, store has ${report.chunks} / ${report.chunkBytes}`,
    );
  }
}
