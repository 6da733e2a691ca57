/**
 * Signatures on models uploaded through `POST /v1/models` (issue 14).
 *
 * The upload's `signature` field is the content of the `.sig` that `outpost sign --kind model`
 * writes for a file named `model.onnx` (as a JSON string, or the parsed object): it covers the
 * model's bytes (SHA-256), the kind `model` and the name `model.onnx` — see
 * src/release/signature.ts. When `spec.release.trustedKeys` is not empty, an upload is accepted
 * only with a valid signature by one of those keys; otherwise signatures are not checked and the
 * answer says so.
 */
import { SignatureError, type TrustedKey, type VerifiedSignature, verifySignatureText } from "../release/signature.ts";
import { sha256Hex } from "../sha256.ts";

/** The name an uploaded model is signed under: sign the file as `model.onnx`. */
export const MODEL_SIGNED_NAME = "model.onnx";

/** An upload refused for its signature: `unsigned_model` (none given) or `bad_signature`. */
export class ModelSignatureError extends Error {
  readonly code: "unsigned_model" | "bad_signature";
  readonly reason: SignatureError["reason"];
  constructor(code: ModelSignatureError["code"], reason: SignatureError["reason"], message: string) {
    super(message);
    this.name = "ModelSignatureError";
    this.code = code;
    this.reason = reason;
  }
}

/** What the upload's answer says about its signature. */
export type ModelSignatureStatus =
  | { verified: true; keyId: string; key: string; name: string; sha256: string }
  | { verified: false; reason: string };

/** Checks an upload's signature against the trusted keys; throws ModelSignatureError. */
export async function checkModelSignature(
  onnx: Uint8Array,
  signature: string | Record<string, unknown> | undefined,
  trustedKeys: readonly TrustedKey[],
): Promise<ModelSignatureStatus> {
  if (trustedKeys.length === 0) {
    return {
      verified: false,
      reason: "no spec.release.trustedKeys configured: model signatures are not checked",
    };
  }
  if (signature === undefined) {
    throw new ModelSignatureError(
      "unsigned_model",
      "unsigned",
      `spec.release.trustedKeys is set: an uploaded model needs a "signature" (the ${MODEL_SIGNED_NAME}.sig written by outpost sign --kind model ${MODEL_SIGNED_NAME})`,
    );
  }
  const text = typeof signature === "string" ? signature : JSON.stringify(signature);
  let verified: VerifiedSignature;
  try {
    verified = await verifySignatureText(MODEL_SIGNED_NAME, text, "model", sha256Hex(onnx), trustedKeys, {
      name: MODEL_SIGNED_NAME,
      source: "the upload's signature",
    });
  } catch (error) {
    if (!(error instanceof SignatureError)) throw error;
    throw new ModelSignatureError("bad_signature", error.reason, error.message);
  }
  return { verified: true, keyId: verified.keyId, key: verified.key, name: verified.name, sha256: verified.sha256 };
}
