/**
 * What a scenario returns and what the harness gives it. Every figure pairs
 * our value with the reference measured in the same run (the C floor), so
 * ratios never compare numbers from different machines or moments.
 */

/** Which direction is better for a figure. */
export type Better = 'lower' | 'higher';

/** A goal on the ratio ours / reference (from the targets). */
export interface RatioTarget {
  /** Human text, e.g. '<= 1.2x floor'. */
  text: string;
  /** Met when ratio <= max (for 'lower' figures) or ratio >= min ('higher'). */
  max?: number;
  min?: number;
}

export interface Figure {
  /** Short name, unique within its scenario, e.g. 'p50'. */
  name: string;
  unit: string;
  better: Better;
  ours: number;
  /** The reference value, or null when the scenario has none for this figure. */
  reference: number | null;
  /** What the reference is, e.g. 'C floor (poll+read+UFFDIO_COPY)'. */
  referenceName: string | null;
  /** ours / reference (null without a reference). */
  ratio: number | null;
  target: (RatioTarget & { met: boolean }) | null;
  /** Set when the reference was attempted in this run and failed (criu on a kernel it does not support):
   *  what failed, in the reference's own words. `reference` is null then. */
  referenceError?: string;
}

/** A latency distribution summarised as a CDF: [value, cumulative fraction]. */
export interface DistributionSummary {
  label: string;
  count: number;
  unit: 'us';
  min: number;
  max: number;
  mean: number;
  cdf: Array<[number, number]>;
}

/** Ours against the reference, for the SVG and the JSON. */
export interface Distribution {
  name: string;
  title: string;
  ours: DistributionSummary;
  reference: DistributionSummary;
  /** Further curves of the same panel, measured in the same run (CRIU's lazy-pages daemon). */
  others?: DistributionSummary[];
}

/** One run of one side, for the JSON: the figures pooled into a result come
 *  from these, and their spread shows how noisy the machine was. */
export interface RoundRecord {
  /** 'floor', 'ours', or another baseline a scenario names. */
  side: string;
  round: number;
  values: Record<string, number>;
}

export interface ScenarioResult {
  /** The parameters it ran with (sizes, counts, seeds as strings). */
  params: Record<string, number | string>;
  figures: Figure[];
  rounds: RoundRecord[];
  distributions: Distribution[];
  notes: string[];
}

export interface BenchOptions {
  quick: boolean;
  /** Overrides the region size of the fault scenarios (smoke tests). */
  mib: number | undefined;
  /** Overrides the number of timed faults / forks (smoke tests). */
  faults: number | undefined;
}

export interface BenchContext {
  options: BenchOptions;
  /** Progress on stderr. */
  log(message: string): void;
}

export interface Scenario<Ctx extends BenchContext = BenchContext> {
  name: string;
  title: string;
  /** One line: what is measured and against what. */
  description: string;
  run(ctx: Ctx): Promise<ScenarioResult>;
}

/** A scenario of the issue that cannot run yet, listed so it is not forgotten. */
export interface PlannedScenario {
  name: string;
  needs: string;
  description: string;
}
