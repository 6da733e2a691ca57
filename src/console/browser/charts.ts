/// <reference lib="dom" />
/**
 * Charts with uPlot (served by Outpost itself, src/console/vendor_uplot.ts): a sensor's min/max
 * band per bucket with the anomaly score on a second axis and episodes shaded, and sparklines.
 */

interface Plot {
  ctx: CanvasRenderingContext2D;
  bbox: { left: number; top: number; width: number; height: number };
  valToPos(value: number, scale: string, canvasPixels?: boolean): number;
}

type PlotClass = new (options: Record<string, unknown>, data: unknown[], target: HTMLElement) => Plot;

export interface Series {
  ts: number[];
  score: (number | null)[];
  anomalous: number[];
  sensors: Record<string, { min: (number | null)[]; max: (number | null)[] }>;
  events: { id: number; startMs: number; endMs: number | null; peakScore: number; sensors: string[] }[];
}

export function plotClass(): PlotClass {
  return (globalThis as unknown as { uPlot: PlotClass }).uPlot;
}

export function sparkline(target: HTMLElement, series: { ts: number[]; score: (number | null)[] }): void {
  if (series.ts.length === 0) {
    target.append("no readings");
    return;
  }
  const Plot = plotClass();
  new Plot(
    {
      width: 120,
      height: 28,
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: false } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: "#c0392b", width: 1, points: { show: false } }],
    },
    [series.ts.map((t) => t / 1000), series.score],
    target,
  );
}

/** Shades each episode over the plot area and counts the bands drawn on the target (for tests). */
export function drawEpisodes(plot: Plot, series: Series, target: HTMLElement, endMs: number): void {
  const { ctx, bbox } = plot;
  let drawn = 0;
  ctx.save();
  ctx.fillStyle = "rgba(192, 57, 43, 0.15)";
  for (const event of series.events) {
    const left = Math.max(plot.valToPos(event.startMs / 1000, "x", true), bbox.left);
    const right = Math.min(plot.valToPos((event.endMs ?? endMs) / 1000, "x", true), bbox.left + bbox.width);
    if (right <= left) continue;
    ctx.fillRect(left, bbox.top, Math.max(right - left, 2), bbox.height);
    drawn++;
  }
  ctx.restore();
  target.dataset.episodeBands = String(drawn);
}

/** One chart per sensor: its min and max per bucket as a band, the score on the right axis. */
export function sensorChart(
  target: HTMLElement,
  series: Series,
  sensor: string,
  range: { fromMs: number; toMs: number },
): void {
  const Plot = plotClass();
  const values = series.sensors[sensor];
  new Plot(
    {
      width: Math.max(target.clientWidth, 320),
      height: 200,
      scales: { x: { time: true, min: range.fromMs / 1000, max: range.toMs / 1000 }, score: { auto: true } },
      series: [
        {},
        { label: `${sensor} min`, stroke: "#1f77b4", width: 1 },
        { label: `${sensor} max`, stroke: "#1f77b4", width: 1 },
        { label: "score", stroke: "#c0392b", width: 1, scale: "score" },
      ],
      bands: [{ series: [2, 1], fill: "rgba(31, 119, 180, 0.15)" }],
      axes: [{}, { label: sensor }, { side: 1, scale: "score", label: "score", grid: { show: false } }],
      hooks: { draw: [(plot: Plot) => drawEpisodes(plot, series, target, range.toMs)] },
    },
    [series.ts.map((t) => t / 1000), values.min, values.max, series.score],
    target,
  );
}
