import type { Inference, LoadedModel } from "./inference.ts";

export interface WindowScore {
  score: number;
  contributions: Float32Array | null;
}

/** Packs windows into one row-major input; a window shorter than `window` repeats its oldest row. */
export function packWindows(
  windows: readonly (readonly (readonly number[])[])[],
  window: number,
  features: number,
): Float32Array {
  const width = window * features;
  const input = new Float32Array(windows.length * width);
  windows.forEach((rows, i) => {
    for (let r = 0; r < window; r++) {
      input.set(rows[Math.max(0, rows.length - window + r)], i * width + r * features);
    }
  });
  return input;
}

/**
 * Scores windows (each a list of rows, oldest first, one value per feature) with one model, in
 * onnxruntime calls of at most `batchSize`. Throws ModelRunError when a call fails or returns
 * anything but finite scores of the right shape.
 */
export async function scoreWindows(
  inference: Inference,
  model: LoadedModel,
  windows: readonly (readonly (readonly number[])[])[],
  batchSize: number,
): Promise<WindowScore[]> {
  const { window, features } = model.manifest;
  const results: WindowScore[] = [];
  // One call at a time per model: concurrent runs of one session only contend for the cores.
  for (let start = 0; start < windows.length; start += batchSize) {
    const chunk = windows.slice(start, start + batchSize);
    const output = await inference.run(model, packWindows(chunk, window, features.length), chunk.length);
    for (let i = 0; i < chunk.length; i++) {
      results.push({
        score: output.scores[i],
        contributions: output.contributions?.subarray(i * features.length, (i + 1) * features.length) ?? null,
      });
    }
  }
  return results;
}
