/**
 * onnxruntime sessions that run synchronously. onnxruntime-node's public `InferenceSession.run()`
 * runs the model on the calling thread too, but only from a `setImmediate` callback, which under
 * Deno waits for the event loop's next wake (a 1 ms keep-awake timer held that to about 1 ms a
 * call) and lets other I/O run in between: a scoring pass then also waited behind any ingest
 * commit that arrived meanwhile (commit-to-flag p99, README "Detection"). This holds the same
 * native session that onnxruntime-node's backend holds (its `binding`, onnxruntime-node 1.30.0,
 * pinned by deno.lock) and calls it directly, as the backend's callback does.
 *
 * A run cannot be interrupted either way (it is on the event loop's thread); what bounds it is the
 * graph's bound at upload (onnx_graph_bound.ts) and the batch size.
 */
import type * as ort from "onnxruntime-node";

/** What scoring uses of a session. */
export interface OnnxSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Runs the model now, on this thread; throws what onnxruntime throws. */
  run(feeds: Record<string, ort.Tensor>): Record<string, ort.OnnxValue>;
  release(): void;
}

type BindingModule = typeof import("onnxruntime-node/dist/binding.js");

let loaded: { ort: typeof ort; binding: BindingModule } | null = null;

/** onnxruntime, imported when the first session is made (about 8 MB resident at import). */
export async function loadOnnxruntime(): Promise<{ ort: typeof ort; binding: BindingModule }> {
  if (!loaded) {
    const module = await import("onnxruntime-node");
    loaded = { ort: module, binding: await import("onnxruntime-node/dist/binding.js") };
  }
  return loaded;
}

/** A session of `onnx` (the model's bytes). Throws what onnxruntime throws for a model it refuses. */
export async function createSession(
  onnx: Uint8Array,
  options: ort.InferenceSession.SessionOptions,
): Promise<OnnxSession> {
  const { binding } = await loadOnnxruntime();
  binding.initOrt();
  const native = new binding.binding.InferenceSession();
  native.loadModel(onnx.buffer as ArrayBuffer, onnx.byteOffset, onnx.byteLength, options);
  const inputNames = native.inputMetadata.map((value) => value.name);
  const outputNames = native.outputMetadata.map((value) => value.name);
  const fetches = Object.fromEntries(outputNames.map((name) => [name, null]));
  let released = false;
  return {
    inputNames,
    outputNames,
    run: (feeds) => native.run(feeds, fetches, {}),
    release() {
      if (released) return;
      released = true;
      native.dispose();
    },
  };
}
