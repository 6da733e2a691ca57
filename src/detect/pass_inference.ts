/**
 * The inference step of a scoring pass. Readings of calibrated devices all go to the one shared
 * drift-robust session (baseline_scoring.ts), each with its device's parameters; readings of
 * other models run per model, concurrently (waiting for them one by one would queue devices
 * behind the event loop), each behind a crash marker. A model that fails is deactivated for its
 * scope; the others' scores are kept. When a shared run fails, each calibrated model is run on
 * its own, so that only the failing one is deactivated.
 */
import { type BaselineScores, scoreBaselineColumns } from "./baseline_scoring.ts";
import { scoreWindows } from "./batch_scoring.ts";
import { type LoadedModel, ModelRunError } from "./inference.ts";
import type { PassDeps } from "./scoring_pass.ts";

export interface PendingReading {
  id: number;
  model: LoadedModel;
  window: number[][];
  /** The device's baseline centres when the pass began (calibrated models only). */
  center: number[] | null;
}

export interface ReadingResult {
  score: number;
  contributions: ArrayLike<number> | null;
  /** Level, spread and rate per sensor (calibrated models only). */
  features: ArrayLike<number> | null;
}

export async function inferPending(
  deps: PassDeps,
  pending: readonly PendingReading[],
): Promise<{ scored: Map<number, ReadingResult>; failed: Map<LoadedModel, string> }> {
  const scored = new Map<number, ReadingResult>();
  const failed = new Map<LoadedModel, string>();
  const shared = pending.filter((item) => item.center !== null);
  const byModel = groupByModel(pending.filter((item) => item.center === null));
  await Promise.all([
    scoreShared(deps, shared, scored, failed),
    ...[...byModel].map(async ([model, items]) => {
      const done = deps.markers.begin({
        kind: "inference",
        modelId: model.id,
        rows: items.length,
        startedAt: new Date().toISOString(),
      });
      try {
        const results = await scoreWindows(
          deps.inference,
          model,
          items.map((item) => item.window),
          deps.config.batchSize,
        );
        items.forEach((item, i) => scored.set(item.id, { ...results[i], features: null }));
      } catch (error) {
        fail(deps, error, model, failed);
      } finally {
        done();
      }
    }),
  ]);
  return { scored, failed };
}

async function scoreShared(
  deps: PassDeps,
  items: readonly PendingReading[],
  scored: Map<number, ReadingResult>,
  failed: Map<LoadedModel, string>,
): Promise<void> {
  if (items.length === 0) return;
  const run = (group: readonly PendingReading[]): Promise<BaselineScores> =>
    scoreBaselineColumns(
      deps.inference,
      group[0].model.session,
      group.map((item) => ({ rows: item.window, params: item.model.manifest.baseline!, center: item.center! })),
      deps.config.batchSize,
    );
  const keep = (group: readonly PendingReading[], results: BaselineScores) => {
    for (let i = 0; i < group.length; i++) scored.set(group[i].id, results.result(i));
  };
  try {
    keep(items, await run(items));
    return;
  } catch (error) {
    if (!(error instanceof ModelRunError)) throw error;
  }
  for (const [model, group] of groupByModel(items)) {
    try {
      keep(group, await run(group));
    } catch (error) {
      fail(deps, error, model, failed);
    }
  }
}

function fail(deps: PassDeps, error: unknown, model: LoadedModel, failed: Map<LoadedModel, string>): void {
  if (!(error instanceof ModelRunError)) throw error;
  failed.set(model, error.message);
  deps.registry.deactivate(model.id, error.message);
  deps.observer?.modelDeactivated?.(error.failure);
}

function groupByModel(items: readonly PendingReading[]): Map<LoadedModel, PendingReading[]> {
  const groups = new Map<LoadedModel, PendingReading[]>();
  for (const item of items) (groups.get(item.model) ?? groups.set(item.model, []).get(item.model)!).push(item);
  return groups;
}
