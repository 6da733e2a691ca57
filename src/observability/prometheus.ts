/**
 * The Prometheus text exposition format 0.0.4, for the four metric types Outpost uses. It replaces
 * prom-client, whose import alone cost about 6 MB of resident memory over Deno's node layer.
 *
 * Rules it keeps:
 * - The constructor options are prom-client's (`name`, `help`, `labelNames`, `registers`, ...), so
 *   a metric reads the same where it is declared, and the output is the same text: metrics in the
 *   order they were registered, one blank line between them, labels in `labelNames` order.
 * - Label values escape backslash, double quote and newline; help text escapes backslash and newline.
 * - A metric without labels always has its one series (0 until set); a labelled one has a series per
 *   label set it was given, until `remove`. This module does not bound series: each caller bounds
 *   the label values it passes (see `deviceSeries` in `src/detect/detect_metrics.ts`).
 * - A summary's quantiles cover the last `maxAgeSeconds`, from at most `ageBuckets` ×
 *   {@link SUMMARY_SAMPLES_PER_BUCKET} kept observations; its `_sum` and `_count` cover all time.
 */

/** What `/metrics` answers with, as prom-client declared it. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Observations a summary keeps per age bucket; beyond it, a uniform sample of the bucket. */
export const SUMMARY_SAMPLES_PER_BUCKET = 512;

type Labels<L extends string> = Readonly<Record<L, string>>;

interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  registers?: Registry[];
}

interface Exposable {
  readonly name: string;
  collect(): void | Promise<void>;
  render(): string;
}

/** The metrics `/metrics` serves, in the order they were registered. */
export class Registry {
  readonly contentType = CONTENT_TYPE;
  readonly #metrics = new Map<string, Exposable>();

  registerMetric(metric: Exposable): void {
    if (this.#metrics.has(metric.name)) {
      throw new TypeError(`A metric with this name is already registered: ${metric.name}`);
    }
    this.#metrics.set(metric.name, metric);
  }

  /** The exposition text, after every metric's `collect` callback has run. */
  async metrics(): Promise<string> {
    const metrics = [...this.#metrics.values()];
    await Promise.all(metrics.map((metric) => metric.collect()));
    return metrics.map((metric) => metric.render()).join("\n\n") + "\n";
  }
}

/** Label set → series, with each series' label text rendered once when it is created. */
abstract class Metric<L extends string, S> implements Exposable {
  readonly name: string;
  readonly #header: string;
  readonly #labelNames: readonly L[];
  readonly #series = new Map<string, { labels: string; state: S }>();

  constructor(type: string, options: MetricOptions<L>) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(options.name)) {
      throw new TypeError(`Invalid metric name: ${options.name}`);
    }
    this.name = options.name;
    this.#labelNames = options.labelNames ?? [];
    for (const label of this.#labelNames) {
      if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(label) || label === "le" || label === "quantile") {
        throw new TypeError(`Invalid label name for ${options.name}: ${label}`);
      }
    }
    const help = options.help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
    this.#header = `# HELP ${this.name} ${help}\n# TYPE ${this.name} ${type}`;
    for (const registry of options.registers ?? []) registry.registerMetric(this);
  }

  protected abstract initial(): S;
  protected abstract lines(name: string, labels: string, state: S): string[];

  collect(): void | Promise<void> {}

  render(): string {
    if (this.#labelNames.length === 0 && this.#series.size === 0) this.series(undefined);
    const lines = [this.#header];
    for (const { labels, state } of this.#series.values()) lines.push(...this.lines(this.name, labels, state));
    return lines.join("\n");
  }

  /** The series for `labels`, created on first use. */
  protected series(labels: Labels<L> | undefined): S {
    const values = this.#values(labels);
    const key = values.join("\u0000");
    let series = this.#series.get(key);
    if (series === undefined) {
      const pairs = this.#labelNames.flatMap((name, i) =>
        values[i] === undefined ? [] : [`${name}="${escapeLabelValue(values[i])}"`]
      );
      series = { labels: pairs.join(","), state: this.initial() };
      this.#series.set(key, series);
    }
    return series.state;
  }

  protected removeSeries(labels: Labels<L>): void {
    this.#series.delete(this.#values(labels).join("\u0000"));
  }

  #values(labels: Labels<L> | undefined): (string | undefined)[] {
    if (labels !== undefined) {
      for (const name of Object.keys(labels)) {
        if (!this.#labelNames.includes(name as L)) throw new TypeError(`Unknown label for ${this.name}: ${name}`);
      }
    }
    return this.#labelNames.map((name) => labels?.[name] === undefined ? undefined : String(labels[name]));
  }
}

/** A value that only goes up. */
export class Counter<L extends string = never> extends Metric<L, { value: number }> {
  constructor(options: MetricOptions<L>) {
    super("counter", options);
  }

  inc(value?: number): void;
  inc(labels: Labels<L>, value?: number): void;
  inc(labelsOrValue?: Labels<L> | number, value = 1): void {
    const [labels, by] = typeof labelsOrValue === "object" ? [labelsOrValue, value] : [undefined, labelsOrValue ?? 1];
    if (!(by >= 0) || by === Infinity) throw new RangeError(`A counter only increases by a finite amount: ${by}`);
    this.series(labels).value += by;
  }

  protected initial() {
    return { value: 0 };
  }

  protected lines(name: string, labels: string, state: { value: number }): string[] {
    return [sample(name, labels, state.value)];
  }
}

/** A value that is set, and that may go down; `collect` runs before each render. */
export class Gauge<L extends string = never> extends Metric<L, { value: number }> {
  readonly #collect: (() => void | Promise<void>) | undefined;

  constructor(options: MetricOptions<L> & { collect?: (this: Gauge<L>) => void | Promise<void> }) {
    super("gauge", options);
    this.#collect = options.collect?.bind(this);
  }

  set(value: number): void;
  set(labels: Labels<L>, value: number): void;
  set(labelsOrValue: Labels<L> | number, value?: number): void {
    if (typeof labelsOrValue === "number") this.series(undefined).value = labelsOrValue;
    else this.series(labelsOrValue).value = value!;
  }

  inc(value?: number): void;
  inc(labels: Labels<L>, value?: number): void;
  inc(labelsOrValue?: Labels<L> | number, value = 1): void {
    if (typeof labelsOrValue === "object") this.series(labelsOrValue).value += value;
    else this.series(undefined).value += labelsOrValue ?? 1;
  }

  dec(value?: number): void;
  dec(labels: Labels<L>, value?: number): void;
  dec(labelsOrValue?: Labels<L> | number, value = 1): void {
    if (typeof labelsOrValue === "object") this.inc(labelsOrValue, -value);
    else this.inc(-(labelsOrValue ?? 1));
  }

  /** Drops the series of `labels`: it is absent from the output until set again. */
  remove(labels: Labels<L>): void {
    this.removeSeries(labels);
  }

  override collect(): void | Promise<void> {
    return this.#collect?.();
  }

  protected initial() {
    return { value: 0 };
  }

  protected lines(name: string, labels: string, state: { value: number }): string[] {
    return [sample(name, labels, state.value)];
  }
}

interface HistogramState {
  counts: Float64Array;
  sum: number;
  count: number;
}

/** Observations counted into fixed buckets: cumulative `_bucket{le=...}` up to `+Inf`, `_sum`, `_count`. */
export class Histogram<L extends string = never> extends Metric<L, HistogramState> {
  readonly #bounds: readonly number[];
  readonly #le: readonly string[];

  constructor(options: MetricOptions<L> & { buckets: readonly number[] }) {
    super("histogram", options);
    this.#bounds = [...options.buckets].sort((a, b) => a - b);
    this.#le = [...this.#bounds.map((bound) => `le="${formatValue(bound)}"`), `le="+Inf"`];
  }

  observe(value: number): void;
  observe(labels: Labels<L>, value: number): void;
  observe(labelsOrValue: Labels<L> | number, value?: number): void {
    const [labels, observed] = typeof labelsOrValue === "number" ? [undefined, labelsOrValue] : [labelsOrValue, value!];
    if (Number.isNaN(observed)) throw new RangeError(`Histogram observation is not a number: ${this.name}`);
    const state = this.series(labels);
    let bucket = 0;
    while (bucket < this.#bounds.length && observed > this.#bounds[bucket]) bucket++;
    state.counts[bucket]++;
    state.sum += observed;
    state.count++;
  }

  protected initial(): HistogramState {
    return { counts: new Float64Array(this.#bounds.length + 1), sum: 0, count: 0 };
  }

  protected lines(name: string, labels: string, state: HistogramState): string[] {
    const lines: string[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.#le.length; i++) {
      cumulative += state.counts[i];
      lines.push(sample(`${name}_bucket`, labels ? `${this.#le[i]},${labels}` : this.#le[i], cumulative));
    }
    lines.push(sample(`${name}_sum`, labels, state.sum), sample(`${name}_count`, labels, state.count));
    return lines;
  }
}

/** One age bucket of a summary: a uniform sample (reservoir) of what was observed in its time slot. */
interface AgeBucket {
  slot: number;
  seen: number;
  kept: number;
  samples: Float64Array;
}

interface SummaryState {
  buckets: AgeBucket[];
  sum: number;
  count: number;
}

/**
 * Quantiles of the observations of the last `maxAgeSeconds`, `_sum` and `_count` of all of them,
 * without labels. Time is cut into `ageBuckets` slots of `maxAgeSeconds / ageBuckets`; the quantiles
 * read the slots still younger than `maxAgeSeconds`, so they cover between `maxAgeSeconds` minus
 * one slot and `maxAgeSeconds` (prom-client's rotating window does the same). Each slot keeps at
 * most {@link SUMMARY_SAMPLES_PER_BUCKET} observations, a uniform sample of what it saw, each
 * weighted by how many it stands for. A quantile is the smallest kept observation with at least
 * that fraction of the weight at or below it (an observed value, as in client_golang); NaN when the
 * window is empty.
 */
export class Summary extends Metric<never, SummaryState> {
  readonly #percentiles: readonly number[];
  readonly #slotMs: number;
  readonly #ageBuckets: number;

  constructor(
    options: MetricOptions<never> & { percentiles: readonly number[]; maxAgeSeconds: number; ageBuckets: number },
  ) {
    super("summary", options);
    if (options.percentiles.some((q) => !(q >= 0 && q <= 1))) {
      throw new RangeError(`Summary percentiles must lie in [0, 1]: ${options.name}`);
    }
    if (!(options.maxAgeSeconds > 0) || !Number.isInteger(options.ageBuckets) || options.ageBuckets < 1) {
      throw new RangeError(`Summary needs maxAgeSeconds > 0 and a whole ageBuckets >= 1: ${options.name}`);
    }
    this.#percentiles = options.percentiles;
    this.#ageBuckets = options.ageBuckets;
    this.#slotMs = options.maxAgeSeconds * 1000 / options.ageBuckets;
  }

  observe(value: number): void {
    if (Number.isNaN(value)) throw new RangeError(`Summary observation is not a number: ${this.name}`);
    const state = this.series(undefined);
    state.sum += value;
    state.count++;
    const slot = Math.floor(performance.now() / this.#slotMs);
    const index = slot % this.#ageBuckets;
    const bucket = state.buckets[index] ??= {
      slot,
      seen: 0,
      kept: 0,
      samples: new Float64Array(SUMMARY_SAMPLES_PER_BUCKET),
    };
    if (bucket.slot !== slot) Object.assign(bucket, { slot, seen: 0, kept: 0 });
    bucket.seen++;
    if (bucket.kept < SUMMARY_SAMPLES_PER_BUCKET) bucket.samples[bucket.kept++] = value;
    else {
      const replace = Math.floor(Math.random() * bucket.seen);
      if (replace < SUMMARY_SAMPLES_PER_BUCKET) bucket.samples[replace] = value;
    }
  }

  protected initial(): SummaryState {
    return { buckets: [], sum: 0, count: 0 };
  }

  protected lines(name: string, _labels: string, state: SummaryState): string[] {
    const now = Math.floor(performance.now() / this.#slotMs);
    const weighted: { value: number; weight: number }[] = [];
    let total = 0;
    for (const bucket of state.buckets) {
      if (bucket === undefined || bucket.slot <= now - this.#ageBuckets || bucket.kept === 0) continue;
      const weight = bucket.seen / bucket.kept;
      for (let i = 0; i < bucket.kept; i++) weighted.push({ value: bucket.samples[i], weight });
      total += bucket.seen;
    }
    weighted.sort((a, b) => a.value - b.value);
    const lines = this.#percentiles.map((q) => {
      let value = NaN;
      let below = 0;
      for (const entry of weighted) {
        below += entry.weight;
        value = entry.value;
        if (below >= q * total * (1 - 1e-12)) break;
      }
      return sample(name, `quantile="${formatValue(q)}"`, value);
    });
    lines.push(sample(`${name}_sum`, "", state.sum), sample(`${name}_count`, "", state.count));
    return lines;
  }
}

function sample(name: string, labels: string, value: number): string {
  return `${name}${labels ? `{${labels}}` : ""} ${formatValue(value)}`;
}

/** A sample value as the format spells it: `+Inf`, `-Inf`, `NaN`, else JavaScript's shortest form. */
export function formatValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** A label value between double quotes: backslash, double quote and newline escaped. */
export function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}
