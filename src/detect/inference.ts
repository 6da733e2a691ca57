/**
 * onnxruntime sessions, created once per model and reused. Session options for small devices:
 * threads from the manifest, sequential execution, and no CPU memory arena or memory pattern
 * (both trade RSS for speed that models this small do not need; see README "Detection").
 *
 * Every run is checked (model_output.ts): a run that throws, took longer than RUN_TIMEOUT_MS or
 * returns non-finite or misshapen outputs fails with ModelRunError. Runs are synchronous
 * (onnx_session.ts): one cannot be stopped once started, so its time is bounded by the graph's
 * bound at upload and the batch size, and one that took too long fails after it ends.
 *
 * onnxruntime itself is loaded at the first session (a device's first model), not at start: a
 * device still calibrating, or with detection off, never pays for it (about 8 MB at import).
 */
import type * as ort from "onnxruntime-node";
import { createSession, loadOnnxruntime, type OnnxSession } from "./onnx_session.ts";
import { packWindows } from "./batch_scoring.ts";
import { testBaseline } from "./baseline_scoring.ts";
import { loadTestWindows } from "./load_test_input.ts";
import { type BundleManifest, missingTensorNames, type ModelBundle, ModelBundleError } from "./model_bundle.ts";
import { checkedOutputs, ModelRunError, type ScoredBatch } from "./model_output.ts";

export { ModelRunError, type OnnxSession, type ScoredBatch };

/** How long one onnxruntime call may take (scoring and load tests); a longer one fails when it ends. */
export const RUN_TIMEOUT_MS = 10_000;

export interface LoadedModel {
  readonly id: number;
  readonly manifest: BundleManifest;
  readonly session: OnnxSession;
}

/** Input tensors of one run, by name: float32 (or int64) data and its shape. */
export type Feeds = Record<string, { data: Float32Array | BigInt64Array; dims: number[] }>;

export class Inference {
  readonly #options: ort.InferenceSession.SessionOptions;
  readonly #models = new Map<number, LoadedModel>();
  /**
   * Sessions by the SHA-256 of their model: models with the same graph share one (every
   * calibrated device runs the same drift-robust graph with its own parameters as inputs).
   */
  readonly #sessions = new Map<string, OnnxSession>();

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

  /** Drops a deleted model; its session stays while other models share it (sessions go at release). */
  forget(id: number): void {
    this.#models.delete(id);
  }

  /**
   * Creates the session of a model that passed its load test when it was activated; throws
   * ModelBundleError if onnxruntime refuses it or its tensor names do not match.
   */
  async load(id: number, bundle: ModelBundle): Promise<LoadedModel> {
    const existing = this.#models.get(id);
    if (existing) return existing;
    const { sha256 } = bundle.manifest;
    let session = this.#sessions.get(sha256);
    if (!session) this.#sessions.set(sha256, session = await this.#session(bundle));
    const model = { id, manifest: bundle.manifest, session };
    this.#models.set(id, model);
    return model;
  }

  /**
   * Load-tests a bundle without keeping it (before activation): several windows cut from
   * `samples` (real rows of the scope, one value per feature) or synthetic ones, each of which
   * must give a finite score of the right shape. Throws ModelBundleError.
   */
  async test(bundle: ModelBundle, samples: readonly (readonly number[])[] = []): Promise<void> {
    const { manifest } = bundle;
    const shared = this.#sessions.get(manifest.sha256);
    const session = shared ?? await this.#session(bundle);
    const windows = loadTestWindows(samples, manifest.features.length, manifest.window);
    try {
      if (manifest.baseline) await testBaseline(this, session, manifest, windows);
      else {
        await this.run(
          { id: 0, manifest, session },
          packWindows(windows, manifest.window, manifest.features.length),
          windows.length,
        );
      }
    } catch (error) {
      throw new ModelBundleError("Model failed its load test", [
        `${(error as Error).message} (on ${windows.length} ${
          samples.length > 0 ? "windows of stored readings" : "synthetic windows"
        })`,
      ], { cause: error });
    } finally {
      if (!shared) session.release();
    }
  }

  /** Scores `count` rows packed in `input` (row-major, window x features each). Throws ModelRunError. */
  async run(model: LoadedModel, input: Float32Array, count: number): Promise<ScoredBatch> {
    const { manifest } = model;
    const width = manifest.features.length;
    const dims = manifest.window === 1 ? [count, width] : [count, manifest.window, width];
    const outputs = await this.runFeeds(model.session, { [manifest.input]: { data: input, dims } });
    return checkedOutputs(outputs, manifest, count);
  }

  /** One onnxruntime call with the given inputs, run now. Throws ModelRunError. */
  async runFeeds(session: OnnxSession, feeds: Feeds): Promise<ort.InferenceSession.OnnxValueMapType> {
    // A session exists, so onnxruntime is loaded by now.
    const { Tensor } = (await loadOnnxruntime()).ort;
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) {
      tensors[name] = data instanceof BigInt64Array
        ? new Tensor("int64", data, dims)
        : new Tensor("float32", data, dims);
    }
    const started = performance.now();
    let outputs;
    try {
      outputs = session.run(tensors);
    } catch (error) {
      throw new ModelRunError("failed", `onnxruntime failed: ${(error as Error).message}`, { cause: error });
    }
    const ms = performance.now() - started;
    if (ms > RUN_TIMEOUT_MS) {
      throw new ModelRunError("timeout", `The model ran ${Math.round(ms)} ms, longer than ${RUN_TIMEOUT_MS} ms`);
    }
    return outputs;
  }

  release(): Promise<void> {
    for (const session of this.#sessions.values()) session.release();
    this.#sessions.clear();
    this.#models.clear();
    return Promise.resolve();
  }

  async #session(bundle: ModelBundle): Promise<OnnxSession> {
    const { manifest } = bundle;
    let session: OnnxSession;
    try {
      session = await createSession(bundle.onnx, this.#options);
    } catch (error) {
      throw new ModelBundleError("onnxruntime refused the model", [(error as Error).message], { cause: error });
    }
    const missing = missingTensorNames(manifest, session.inputNames, session.outputNames);
    if (missing) {
      session.release();
      throw missing;
    }
    return session;
  }
}
