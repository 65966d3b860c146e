/**
 * A full consistency check of the store (docs/image-store.md, "Invariants"), read from one snapshot: every
 * chunk is referenced and its data (in its pack) matches its hash, every ref belongs to a known image and is
 * backed by one of its page map entries, every page map entry's chunk and ref exist, the counters and the
 * pack records are exact, and no pack file is left that nothing names.
 */
import { parseJson, type Counters, type Db } from './core.js';
import {
  CHUNKS,
  COUNTERS_KEY,
  IMAGE_IDS,
  IMAGES,
  MAPS,
  METAS,
  PACKS,
  parseMapKey,
  parseRefKey,
  PENDING,
  REFS,
} from './keys.js';
import { decodeLocation, type PackFiles, type PackRecord } from './packs.js';
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
  /** Per pack: the chunks located in it (number, bytes) and the end of the last one. */
  packUse: Map<string, PackRecord>;
}

export async function checkStore(db: Db, packs: PackFiles): Promise<CheckReport> {
  const snapshot = db.snapshot();
  try {
    const scan: Scan = {
      report: { images: 0, pending: 0, chunks: 0, chunkBytes: 0, refs: 0, mapEntries: 0, problems: [] },
      known: new Set(),
      bitmaps: new Map(),
      mapRefs: new Set(),
      refCount: new Map(),
      packUse: new Map(),
    };
    await scanCatalogue(db, snapshot, scan);
    await scanMaps(db, snapshot, scan);
    await scanRefs(db, snapshot, scan);
    await scanChunks(db, snapshot, packs, scan);
    await checkCounters(db, snapshot, scan);
    await checkPacks(db, snapshot, packs, scan);
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

async function scanChunks(db: Db, snapshot: Snapshot, packs: PackFiles, scan: Scan): Promise<void> {
  const { report } = scan;
  const present = new Set<string>();
  for await (const [key, value] of entries(db, snapshot, CHUNKS)) {
    const hash = key.slice(CHUNKS.gte.length);
    present.add(hash);
    report.chunks++;
    const bitmap = scan.bitmaps.get(hash);
    if (!scan.refCount.has(hash)) report.problems.push(`chunk ${hash} has no chunk-ref (orphan)`);
    if (bitmap === undefined) report.problems.push(`chunk ${hash} is named by no page map entry`);
    const loc = decodeLocation(value);
    if (loc === undefined) {
      report.problems.push(`chunk ${hash} has a malformed location`);
      continue;
    }
    report.chunkBytes += loc.length;
    const use = scan.packUse.get(loc.pack) ?? { chunks: 0, bytes: 0, end: 0 };
    use.chunks++;
    use.bytes += loc.length;
    use.end = Math.max(use.end, loc.offset + loc.length);
    scan.packUse.set(loc.pack, use);
    let data: Buffer;
    try {
      data = await packs.read(loc.pack, loc.offset, loc.length);
    } catch (e) {
      report.problems.push(`chunk ${hash}: pack ${loc.pack} cannot be read (${(e as NodeJS.ErrnoException).code})`);
      continue;
    }
    if (bitmap !== undefined && !chunkMatches({ present: bitmap, bitmap, hash }, data))
      report.problems.push(`chunk ${hash} does not match its hash`);
  }
  for (const hash of scan.bitmaps.keys()) if (!present.has(hash)) report.problems.push(`chunk ${hash} is missing`);
}

/** pack! records against the chunks located in each pack, and the pack files against the records. */
async function checkPacks(db: Db, snapshot: Snapshot, packs: PackFiles, scan: Scan): Promise<void> {
  const { report } = scan;
  const recorded = new Set<string>();
  for await (const [key, value] of entries(db, snapshot, PACKS)) {
    const pack = key.slice(PACKS.gte.length);
    recorded.add(pack);
    const rec = parseJson<PackRecord>(value, key);
    const use = scan.packUse.get(pack) ?? { chunks: 0, bytes: 0, end: 0 };
    if (rec.chunks !== use.chunks || rec.bytes !== use.bytes)
      report.problems.push(
        `${key} says ${rec.chunks} chunks / ${rec.bytes} bytes, it holds ${use.chunks} / ${use.bytes}`,
      );
    if (use.end > rec.end) report.problems.push(`${key}: a chunk ends at ${use.end}, past the recorded end ${rec.end}`);
    const size = await packs.sizeOf(pack);
    if (size === undefined) report.problems.push(`${key}: the pack file is missing`);
    else if (size.size < rec.end) report.problems.push(`${key}: the pack file is shorter than ${rec.end} bytes`);
  }
  for (const pack of scan.packUse.keys())
    if (!recorded.has(pack)) report.problems.push(`chunks are located in pack ${pack}, which has no record`);
  // A writer still running has a pack file before its first batch records it.
  for (const pack of await packs.list())
    if (!recorded.has(pack) && !scan.known.has(pack)) report.problems.push(`pack file ${pack} is named by nothing`);
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
