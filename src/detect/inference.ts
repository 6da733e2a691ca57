/**
 * onnxruntime sessions, created once per model and reused. Session options for small devices:
 * threads from the manifest, sequential execution, and no CPU memory arena or memory pattern
 * (both trade RSS for speed that models this small do not need; see README "Detection").
 */
import * as ort from "onnxruntime-node";
import { type BundleManifest, type ModelBundle, ModelBundleError } from "./model_bundle.ts";

export interface LoadedModel {
  readonly id: number;
  readonly manifest: BundleManifest;
  readonly session: ort.InferenceSession;
}

export interface ScoredBatch {
  scores: Float32Array;
  /** [count x features] when the model names a contributions output. */
  contributions: Float32Array | null;
}

export class Inference {
  readonly #options: ort.InferenceSession.SessionOptions;
  readonly #models = new Map<number, LoadedModel>();

  constructor(threads: number) {
    this.#options = {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "disabled",
      enableCpuMemArena: false,
      enableMemPattern: false,
    };
  }

  get(id: number): LoadedModel | undefined {
    return this.#models.get(id);
  }

  /** Creates the session and load-tests it with one zero input; throws ModelBundleError if unusable. */
  async load(id: number, bundle: ModelBundle): Promise<LoadedModel> {
    const existing = this.#models.get(id);
    if (existing) return existing;
    const model = await Inference.#create(id, bundle, this.#options);
    this.#models.set(id, model);
    return model;
  }

  /** Load-tests a bundle without keeping it (for uploads before activation). */
  async test(bundle: ModelBundle): Promise<void> {
    const model = await Inference.#create(0, bundle, this.#options);
    await model.session.release();
  }

  static async #create(id: number, bundle: ModelBundle, options: ort.InferenceSession.SessionOptions) {
    const manifest = bundle.manifest;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bundle.onnx, options);
    } catch (error) {
      throw new ModelBundleError("onnxruntime refused the model", [(error as Error).message], { cause: error });
    }
    const missing = [manifest.input].filter((name) => !session.inputNames.includes(name))
      .concat([manifest.output, ...(manifest.contributions ? [manifest.contributions] : [])]
        .filter((name) => !session.outputNames.includes(name)));
    if (missing.length > 0) {
      await session.release();
      throw new ModelBundleError("Tensor names in model.json are not in the model", [
        `missing ${missing.join(", ")}; the model has inputs ${session.inputNames.join(", ")} and outputs ${
          session.outputNames.join(", ")
        }`,
      ]);
    }
    const model = { id, manifest, session };
    try {
      const probe = await run(model, new Float32Array(manifest.window * manifest.features.length), 1);
      if (probe.scores.length !== 1) throw new Error(`expected 1 score for 1 input, got ${probe.scores.length}`);
    } catch (error) {
      await session.release();
      throw new ModelBundleError("Model failed its load test", [(error as Error).message], { cause: error });
    }
    return model;
  }

  /** Scores `count` rows packed in `input` (row-major, window x features each). */
  run(model: LoadedModel, input: Float32Array, count: number): Promise<ScoredBatch> {
    return run(model, input, count);
  }

  async release(): Promise<void> {
    for (const model of this.#models.values()) await model.session.release();
    this.#models.clear();
  }
}

async function run(model: LoadedModel, input: Float32Array, count: number): Promise<ScoredBatch> {
  const { manifest } = model;
  const width = manifest.features.length;
  const dims = manifest.window === 1 ? [count, width] : [count, manifest.window, width];
  // onnxruntime-node completes run() from a worker thread; under Deno that completion is only
  // noticed when the event loop next wakes, which can be the next request many ms later. A 1 ms
  // timer while the run is pending keeps the loop turning (commit-to-flag p99 ~50 ms → ~10 ms, see README).
  const keepAwake = setInterval(() => {}, 1);
  let outputs: ort.InferenceSession.OnnxValueMapType;
  try {
    outputs = await model.session.run({ [manifest.input]: new ort.Tensor("float32", input, dims) });
  } finally {
    clearInterval(keepAwake);
  }
  const scoreTensor = outputs[manifest.output];
  const raw = scoreTensor.data as Float32Array;
  // [N] or [N, 1]; for [N, m] the first column is the score.
  const stride = raw.length / count;
  const scores = stride === 1
    ? Float32Array.from(raw)
    : Float32Array.from({ length: count }, (_, i) => raw[i * stride]);
  const contributions = manifest.contributions ? (outputs[manifest.contributions].data as Float32Array) : null;
  return { scores, contributions };
}
