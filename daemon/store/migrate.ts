/**
 * Upgrade of a format-1 store (chunk bytes inside `chunk!` values) to format 2 (chunk bytes in pack files,
 * `chunk!` holding their location; docs/image-store.md), run by open() before anything else.
 *
 * The chunks are appended to one pack of their own, a slice at a time; each slice's locations go into
 * LevelDB in one batch with the pack's record. The pack id is recorded first (`store!migration`), so a
 * migration that is interrupted resumes where its last batch ended: a value of a positive multiple of
 * 4096 bytes is still format 1, a 28-byte one is a location already, and the pack is cut back to the end
 * its record names before appending again. The format key changes last.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { jsonValue, parseJson, type Db } from './core.js';
import { CHUNKS, FORMAT_KEY, FORMAT_VERSION, packKey } from './keys.js';
import { encodeLocation, type PackFiles, type PackRecord } from './packs.js';
import { PAGE_SIZE } from './pagemap.js';

export const MIGRATION_KEY = 'store!migration';
/** Chunks moved per batch: 256 x 64 KiB = 16 MiB of memory at most. */
const SLICE = 256;

export async function migrateFromV1(db: Db, packs: PackFiles): Promise<void> {
  await packs.init();
  const marker = await db.get(MIGRATION_KEY);
  let pack: string;
  if (marker === undefined) {
    pack = randomBytes(8).toString('hex');
    await db.put(MIGRATION_KEY, jsonValue({ pack }));
  } else {
    pack = parseJson<{ pack: string }>(marker, MIGRATION_KEY).pack;
  }
  const recorded = await db.get(packKey(pack));
  let record: PackRecord =
    recorded === undefined ? { chunks: 0, bytes: 0, end: 0 } : parseJson<PackRecord>(recorded, packKey(pack));
  await packs.truncateTo(pack, record.end);
  const fh = await open(packs.path(pack), constants.O_WRONLY | constants.O_CREAT, 0o600);
  try {
    let after: string | undefined;
    for (;;) {
      const range = after === undefined ? { gte: CHUNKS.gte } : { gt: after };
      const entries = await db.iterator({ ...range, lt: CHUNKS.lt, limit: SLICE }).all();
      if (entries.length === 0) break;
      after = entries[entries.length - 1]![0];
      const old = entries.filter(([, v]) => v.length > 0 && v.length % PAGE_SIZE === 0);
      if (old.length === 0) continue;
      const ops: Array<{ type: 'put'; key: string; value: Buffer }> = [];
      let end = record.end;
      for (const [key, value] of old) {
        let done = 0;
        while (done < value.length) {
          const { bytesWritten } = await fh.write(value, done, value.length - done, end + done);
          done += bytesWritten;
        }
        ops.push({ type: 'put', key, value: encodeLocation({ pack, offset: end, length: value.length }) });
        end += value.length;
      }
      record = {
        chunks: record.chunks + old.length,
        bytes: record.bytes + old.reduce((n, [, v]) => n + v.length, 0),
        end,
      };
      ops.push({ type: 'put', key: packKey(pack), value: jsonValue(record) });
      await db.batch(ops);
    }
  } finally {
    await fh.close();
  }
  await db.batch([
    { type: 'put', key: FORMAT_KEY, value: jsonValue({ version: FORMAT_VERSION }) },
    { type: 'del', key: MIGRATION_KEY },
  ]);
  // A store without chunks needs no pack.
  if (record.chunks === 0) await packs.remove(pack);
}
