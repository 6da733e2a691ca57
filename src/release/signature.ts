/**
 * Ed25519 signatures for what a device installs, verified offline with WebCrypto.
 *
 * Rules this module keeps:
 * - A signature covers `outpost-signature-v1`, the bundle's kind (binary, release, policy, model),
 *   the file name it was signed under and the file's SHA-256: a signature cannot be moved to a
 *   file of another kind or name, and any change to the file breaks it.
 * - A signature names its key by fingerprint (the first 16 hex digits of the SHA-256 of the raw
 *   32-byte public key); it is valid only when that fingerprint belongs to a key in the policy's
 *   `spec.release.trustedKeys` and the signature checks out under that key. Trusted keys are a
 *   list so that a new key can be trusted before the old one is retired.
 * - `<file>.sig` is JSON: `{ format, kind, name, sha256, keyId, signature }` (signature in base64).
 */
import { basename } from "node:path";
import { sha256File, sha256Hex } from "../sha256.ts";

export const SIGNATURE_FORMAT = "outpost-signature-v1";
export type SignedKind = "binary" | "release" | "policy" | "model";
export const SIGNED_KINDS: readonly SignedKind[] = ["binary", "release", "policy", "model"];

export interface TrustedKey {
  readonly id: string;
  /** The raw 32-byte Ed25519 public key, or its SPKI DER (`openssl pkey -pubout -outform DER`), base64. */
  readonly publicKey: string;
}

export interface SignatureFile {
  format: typeof SIGNATURE_FORMAT;
  kind: SignedKind;
  name: string;
  sha256: string;
  keyId: string;
  signature: string;
}

/** What a verified signature says: shown in `/healthz` and `outpost version`. */
export interface VerifiedSignature {
  kind: SignedKind;
  name: string;
  sha256: string;
  keyId: string;
  /** The trusted key's `id` in the policy. */
  key: string;
}

/** A bundle without a valid signature by a trusted key; `reason` names what is wrong. */
export class SignatureError extends Error {
  readonly file: string;
  readonly reason: "unsigned" | "malformed" | "untrusted_key" | "wrong_kind" | "wrong_name" | "tampered" | "invalid";
  constructor(file: string, reason: SignatureError["reason"], detail: string) {
    super(`${file}: ${detail}`);
    this.name = "SignatureError";
    this.file = file;
    this.reason = reason;
  }
}

const SPKI_ED25519_PREFIX = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);

function signedMessage(kind: SignedKind, name: string, sha256: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${SIGNATURE_FORMAT}\n${kind}\n${name}\n${sha256}\n`);
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text.replace(/\s+/g, ""));
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}

function toBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** The raw 32-byte public key from base64 of raw bytes or of an SPKI DER. */
export function rawPublicKey(publicKey: string): Uint8Array<ArrayBuffer> {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = fromBase64(publicKey.replace(/-----[^-]+-----/g, ""));
  } catch {
    throw new TypeError("Public key is not base64");
  }
  if (bytes.length === 32) return bytes;
  if (bytes.length === 44 && SPKI_ED25519_PREFIX.every((byte, i) => bytes[i] === byte)) return bytes.slice(12);
  throw new TypeError(`Public key is not an Ed25519 key: ${bytes.length} bytes, expected 32 raw or 44 SPKI`);
}

export function keyFingerprint(publicKey: string): string {
  return sha256Hex(rawPublicKey(publicKey)).slice(0, 16);
}

/** The kind a file is signed as when `sign` is not told: by its name. */
export function kindOf(path: string): SignedKind {
  const name = basename(path);
  if (name.endsWith(".release.json") || name === "release.json") return "release";
  if (/\.ya?ml$/.test(name)) return "policy";
  if (/\.(onnx|model\.json)$/.test(name)) return "model";
  return "binary";
}

/** Reads a PKCS#8 Ed25519 private key, PEM (`openssl genpkey -algorithm ed25519`) or DER. */
export async function readPrivateKey(path: string): Promise<{ key: CryptoKey; publicKey: string }> {
  const bytes = await Deno.readFile(path);
  const text = new TextDecoder().decode(bytes);
  const der = text.includes("-----BEGIN PRIVATE KEY-----")
    ? fromBase64(text.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, ""))
    : bytes;
  let extractable: CryptoKey;
  try {
    extractable = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  } catch (error) {
    throw new TypeError(`${path}: not a PKCS#8 Ed25519 private key`, { cause: error });
  }
  const jwk = await crypto.subtle.exportKey("jwk", extractable);
  const x = jwk.x!.replaceAll("-", "+").replaceAll("_", "/");
  const publicKey = x + "=".repeat((4 - x.length % 4) % 4);
  const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
  return { key, publicKey };
}

/** A new key pair: the private key as PKCS#8 PEM, the public key as base64 of its raw 32 bytes. */
export async function generateKeyPair(): Promise<{ privateKeyPem: string; publicKey: string; keyId: string }> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const lines = toBase64(pkcs8).match(/.{1,64}/g)!.join("\n");
  const publicKey = toBase64(raw);
  return {
    privateKeyPem: `-----BEGIN PRIVATE KEY-----\n${lines}\n-----END PRIVATE KEY-----\n`,
    publicKey,
    keyId: keyFingerprint(publicKey),
  };
}

/** Signs `path` and writes `<path>.sig`; returns what was written. */
export async function signFile(
  path: string,
  signer: { key: CryptoKey; publicKey: string },
  options: { kind?: SignedKind } = {},
): Promise<SignatureFile> {
  const kind = options.kind ?? kindOf(path);
  const name = basename(path);
  const sha256 = await sha256File(path);
  const signature = new Uint8Array(
    await crypto.subtle.sign({ name: "Ed25519" }, signer.key, signedMessage(kind, name, sha256)),
  );
  const file: SignatureFile = {
    format: SIGNATURE_FORMAT,
    kind,
    name,
    sha256,
    keyId: keyFingerprint(signer.publicKey),
    signature: toBase64(signature),
  };
  await Deno.writeTextFile(`${path}.sig`, JSON.stringify(file, null, 2) + "\n");
  return file;
}

/**
 * Checks `<path>.sig` (or `options.signatureFile`) against `path` and the trusted keys. The signed
 * name must be `path`'s unless `options.anyName` (a staged release renames its files; the name is
 * still covered by the signature). Throws `SignatureError` naming the reason.
 */
export async function verifyFile(
  path: string,
  kind: SignedKind,
  trusted: readonly TrustedKey[],
  options: { signatureFile?: string; anyName?: boolean } = {},
): Promise<VerifiedSignature> {
  const sigPath = options.signatureFile ?? `${path}.sig`;
  let text: string;
  try {
    text = await Deno.readTextFile(sigPath);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new SignatureError(path, "unsigned", `no signature (${sigPath})`);
    throw error;
  }
  return await verifySignatureText(path, text, kind, await sha256File(path), trusted, {
    name: options.anyName ? undefined : basename(path),
    source: sigPath,
  });
}

/**
 * Checks the text of a `.sig` against content whose SHA-256 is `sha256` (a file, or bytes received
 * over the API) and the trusted keys. `options.name`: the name the signature must be for (any name
 * when absent). `label` names the content in errors. Throws `SignatureError` naming the reason.
 */
export async function verifySignatureText(
  label: string,
  text: string,
  kind: SignedKind,
  sha256: string,
  trusted: readonly TrustedKey[],
  options: { name?: string; source?: string } = {},
): Promise<VerifiedSignature> {
  const path = label;
  const sigPath = options.source ?? "signature";
  let sig: SignatureFile;
  try {
    sig = JSON.parse(text);
    if (sig.format !== SIGNATURE_FORMAT || typeof sig.signature !== "string" || typeof sig.keyId !== "string") {
      throw new TypeError("not an Outpost signature");
    }
  } catch (error) {
    throw new SignatureError(path, "malformed", `unreadable signature ${sigPath}: ${(error as Error).message}`);
  }
  if (sig.kind !== kind) throw new SignatureError(path, "wrong_kind", `signature is for a ${sig.kind}, not a ${kind}`);
  if (options.name !== undefined && sig.name !== options.name) {
    throw new SignatureError(path, "wrong_name", `signature is for ${JSON.stringify(sig.name)}`);
  }
  if (sig.sha256 !== sha256) {
    throw new SignatureError(path, "tampered", `SHA-256 is ${sha256}, the signature covers ${sig.sha256}`);
  }
  const key = trusted.find((candidate) => keyFingerprint(candidate.publicKey) === sig.keyId);
  if (!key) {
    throw new SignatureError(
      path,
      "untrusted_key",
      `signed by key ${sig.keyId}, which is not in spec.release.trustedKeys (${
        trusted.map((k) => `${k.id}=${keyFingerprint(k.publicKey)}`).join(", ") || "none"
      })`,
    );
  }
  const publicKey = await crypto.subtle.importKey("raw", rawPublicKey(key.publicKey), { name: "Ed25519" }, false, [
    "verify",
  ]);
  let ok = false;
  try {
    ok = await crypto.subtle.verify(
      { name: "Ed25519" },
      publicKey,
      fromBase64(sig.signature),
      signedMessage(kind, sig.name, sha256),
    );
  } catch { /* malformed signature bytes */ }
  if (!ok) throw new SignatureError(path, "invalid", `signature does not verify under key ${key.id} (${sig.keyId})`);
  return { kind, name: sig.name, sha256, keyId: sig.keyId, key: key.id };
}

/** The signing policy an upgrade applies: the installed release's trusted keys. */
export interface SignaturePolicy {
  trustedKeys: readonly TrustedKey[];
  /** `--allow-unsigned`: accept a release without signatures, only when no key is trusted. */
  allowUnsigned: boolean;
}

/**
 * Verifies a release before anything changes: the binary and its `.release.json`, each by a trusted
 * key. Without trusted keys, refused unless `allowUnsigned`; with trusted keys, always required.
 * Returns the signatures, or null when unsigned releases were allowed.
 */
export async function verifyReleaseSignatures(
  binary: string,
  policy: SignaturePolicy,
): Promise<{ binary: VerifiedSignature; release: VerifiedSignature } | null> {
  if (policy.trustedKeys.length === 0) {
    if (policy.allowUnsigned) return null;
    throw new SignatureError(
      binary,
      "unsigned",
      "no spec.release.trustedKeys in the installed policy: signed releases cannot be verified (--allow-unsigned to install anyway)",
    );
  }
  return {
    binary: await verifyFile(binary, "binary", policy.trustedKeys),
    release: await verifyFile(`${binary}.release.json`, "release", policy.trustedKeys),
  };
}
