/**
 * Figures quoted from DESIGN.md §6 (CRIU 4.2 on a comparable VM): not measured
 * here, labelled as quoted wherever they are used as a reference.
 */
export const CRIU_LAZY_RUNNING_MS = { low: 40, high: 88 };
export const CRIU_EAGER_RESTORE_1G_MS = 1700;
export const CRIU_RESIDENT_1G_MS = 770;
export const CRIU_DUMP_1G_MS = 2200;

export const QUOTED_LAZY = 'CRIU 4.2 restore --lazy-pages, 1 GiB: 40-88 ms (quoted, DESIGN.md §6; low end)';
export const QUOTED_EAGER = 'CRIU 4.2 restore, 1 GiB: 1.7 s (quoted, DESIGN.md §6)';
export const QUOTED_RESIDENT = 'CRIU 4.2 lazy restore until 1 GiB verified: 0.77 s (quoted, DESIGN.md §6)';
export const QUOTED_DUMP = 'CRIU 4.2 dump, 1 GiB: 2.2 s (quoted, DESIGN.md §6)';
export const TARGET_RUNNING_MS = 40;
