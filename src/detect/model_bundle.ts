/**
 * Model bundles: `model.onnx` plus `model.json`, the contract any ONNX model meets to run here
 * (see README "Model bundles"). The SHA-256 in model.json must match model.onnx.
 */
import { join } from "node:path";
import { z } from "zod";
import { sha256Hex } from "../sha256.ts";
import { FEATURES, TERMS, WINDOW } from "./baseline_features.ts";
import { formatIssuePath } from "../zod_issue.ts";
import { externalDataTensors, MalformedProtobufError } from "./onnx_external_data.ts";
import { type BundleSealer, readMaybeSealed } from "./bundle_seal.ts";

export const MODEL_JSON = "model.json";
export const MODEL_ONNX = "model.onnx";

/**
 * Longest name a bundle's sensors and model may have: `spec.limits.nameLength` goes up to 1,024,
 * and a calibrated model is named `baseline/<device>` (a 128-character device id made a
 * 137-character name, which this schema refused: the device was never scored).
 */
const MAX_NAME = 1_024 + 64;

export const bundleManifestSchema = z.object({
  name: z.string().min(1).max(MAX_NAME),
  version: z.string().min(1).max(64),
  /** Sensor names, in the order of the input tensor's last axis. */
  features: z.array(z.string().min(1).max(MAX_NAME)).min(1).max(1024),
  /** Readings per input row: 1 → input [N, features]; more → [N, window, features], oldest first. */
  window: z.number().int().min(1).max(10_000).default(1),
  input: z.string().min(1),
  output: z.string().min(1),
  /** Optional output [N, features] naming how much each sensor contributed. */
  contributions: z.string().min(1).optional(),
  outputMeaning: z.string().min(1),
  /** A reading whose output exceeds this is anomalous (before debounce). */
  threshold: z.number().finite(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits"),
  provenance: z.record(z.string(), z.unknown()).default({}),
  /**
   * Present on calibrated models only: the device's fitted parameters for the shared
   * drift-robust graph (baseline_graph.ts), passed to it as inputs at every run.
   */
  baseline: z.object({
    roles: z.array(z.enum(["fast", "slow"])),
    roleSource: z.array(z.union([z.number(), z.literal("manifest")])),
    floor: z.array(z.number()),
    scale: z.array(z.number()),
    center: z.array(z.number()),
    up: z.array(z.number()),
    down: z.array(z.number()),
    intervalSeconds: z.number(),
  }).strict().optional(),
}).strict().superRefine((manifest, context) => {
  const params = manifest.baseline;
  if (!params) return;
  const sensors = manifest.features.length;
  const expected: [Exclude<keyof typeof params, "intervalSeconds">, number][] = [
    ["roles", sensors],
    ["roleSource", sensors],
    ["floor", sensors],
    ["scale", FEATURES.length * sensors],
    ["center", TERMS.length * sensors],
    ["up", TERMS.length * sensors],
    ["down", TERMS.length * sensors],
  ];
  for (const [key, length] of expected) {
    const actual = params[key].length;
    if (actual !== length) {
      context.addIssue({
        code: "custom",
        path: ["baseline", key],
        message: `must have ${length} values, has ${actual}`,
      });
    }
  }
  if (manifest.window !== WINDOW) {
    context.addIssue({ code: "custom", path: ["window"], message: `must be ${WINDOW} for a baseline model` });
  }
});

export type BundleManifest = z.output<typeof bundleManifestSchema>;

export interface ModelBundle {
  manifest: BundleManifest;
  onnx: Uint8Array;
}

/** A bundle that cannot be used: bad model.json, hash mismatch, or a model onnxruntime refuses. */
export class ModelBundleError extends Error {
  readonly issues: string[];
  constructor(message: string, issues: string[] = [], options?: ErrorOptions) {
    super(issues.length > 0 ? `${message}: ${issues.join("; ")}` : message, options);
    this.name = "ModelBundleError";
    this.issues = issues;
  }
}

/**
 * Validates model.json, checks the ONNX bytes against its SHA-256, and refuses models that keep
 * tensor data in external files (onnx_external_data.ts).
 */
export function checkBundle(manifestJson: unknown, onnx: Uint8Array): ModelBundle {
  const parsed = bundleManifestSchema.safeParse(manifestJson);
  if (!parsed.success) {
    throw new ModelBundleError(
      "Invalid model.json",
      parsed.error.issues.map((issue) => `${formatIssuePath(issue.path, "(root)")}: ${issue.message}`),
    );
  }
  const actual = sha256Hex(onnx);
  if (actual !== parsed.data.sha256) {
    throw new ModelBundleError("Model hash mismatch", [
      `model.json says ${parsed.data.sha256}, model.onnx is ${actual}`,
    ]);
  }
  let external: string[];
  try {
    external = externalDataTensors(onnx);
  } catch (error) {
    if (!(error instanceof MalformedProtobufError)) throw error;
    throw new ModelBundleError("model.onnx is not an ONNX model", [error.message]);
  }
  if (external.length > 0) {
    throw new ModelBundleError(
      "External tensor data is not allowed: embed every tensor in model.onnx",
      external.slice(0, 20),
    );
  }
  return { manifest: parsed.data, onnx };
}

/** The names model.json gives that the model's inputs and outputs lack, as an error; null when none. */
export function missingTensorNames(
  manifest: BundleManifest,
  inputs: readonly string[],
  outputs: readonly string[],
): ModelBundleError | null {
  const missing = [manifest.input].filter((name) => !inputs.includes(name))
    .concat([manifest.output, ...(manifest.contributions ? [manifest.contributions] : [])]
      .filter((name) => !outputs.includes(name)));
  if (missing.length === 0) return null;
  return new ModelBundleError("Tensor names in model.json are not in the model", [
    `missing ${missing.join(", ")}; the model has inputs ${inputs.join(", ")} and outputs ${outputs.join(", ")}`,
  ]);
}

/** Reads a bundle folder; sealed files (bundle_seal.ts) are opened with `sealer`. */
export async function readBundle(dir: string, sealer: BundleSealer | null = null): Promise<ModelBundle> {
  let manifest: unknown;
  let onnx: Uint8Array;
  try {
    manifest = JSON.parse(new TextDecoder().decode(await readMaybeSealed(join(dir, MODEL_JSON), MODEL_JSON, sealer)));
    onnx = await readMaybeSealed(join(dir, MODEL_ONNX), MODEL_ONNX, sealer);
  } catch (error) {
    throw new ModelBundleError(`Cannot read bundle ${dir}`, [(error as Error).message], { cause: error });
  }
  return checkBundle(manifest, onnx);
}

/**
 * Writes a bundle into a new folder, atomically: files go to a temporary folder renamed at the end.
 * With a sealer both files are sealed (bundle_seal.ts).
 */
export async function writeBundle(dir: string, bundle: ModelBundle, sealer: BundleSealer | null = null): Promise<void> {
  const staging = `${dir}.tmp-${crypto.randomUUID()}`;
  await Deno.mkdir(staging, { recursive: true });
  const json = new TextEncoder().encode(JSON.stringify(bundle.manifest, null, 2) + "\n");
  await Deno.writeFile(join(staging, MODEL_ONNX), sealer ? await sealer.seal(MODEL_ONNX, bundle.onnx) : bundle.onnx);
  await Deno.writeFile(join(staging, MODEL_JSON), sealer ? await sealer.seal(MODEL_JSON, json) : json);
  await Deno.rename(staging, dir);
}
