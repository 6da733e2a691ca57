/**
 * Model bundles sealed at rest. When the store is encrypted (`spec.storage.encryption`), the
 * bundles detection writes under `<dataDir>/models/` would otherwise give away what the database
 * hides: a calibrated bundle names its device and lists each sensor with its fitted levels. With a
 * sealer, `model.json` and `model.onnx` are AES-256-GCM encrypted under a key derived (HKDF-SHA-256)
 * from the database key, and the folder is named by a hash instead of the model's name.
 *
 * File format: the 8-byte magic `OPSEAL1\0`, a 12-byte random IV, then the ciphertext with its
 * 16-byte tag. The file's name (`model.json`, `model.onnx`) is bound as additional data, so one
 * cannot pass for the other; the folder is not bound, and a file in clear is still read. This is
 * confidentiality for a card that is taken, not integrity against one that is written to: whoever
 * can write the data dir can swap whole sealed bundles between folders or put a bundle in clear.
 */
import { join } from "node:path";
import { DatabaseKey } from "../store/encryption_key.ts";
import { giveToOwnerOf } from "../store/file_owner.ts";
import type { SecretLocation } from "../config/config.ts";

const MAGIC = new TextEncoder().encode("OPSEAL1\0");
const IV_BYTES = 12;

/** A sealed file read without the key, or one that does not open with it. */
export class SealedBundleError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SealedBundleError";
  }
}

export class BundleSealer {
  readonly #key: CryptoKey;

  private constructor(key: CryptoKey) {
    this.#key = key;
  }

  /** The sealer of the store's key, or null when the store is not encrypted. */
  static async forStore(location: SecretLocation | null): Promise<BundleSealer | null> {
    if (location === null) return null;
    return await BundleSealer.fromSecret((await DatabaseKey.load(location)).reveal());
  }

  static async fromSecret(secret: string): Promise<BundleSealer> {
    const material = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), "HKDF", false, [
      "deriveKey",
    ]);
    const key = await crypto.subtle.deriveKey(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new TextEncoder().encode("outpost"),
        info: new TextEncoder().encode("outpost model bundles v1"),
      },
      material,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
    return new BundleSealer(key);
  }

  async seal(fileName: string, plain: Uint8Array): Promise<Uint8Array> {
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(fileName) },
        this.#key,
        plain as Uint8Array<ArrayBuffer>,
      ),
    );
    const out = new Uint8Array(MAGIC.length + IV_BYTES + sealed.length);
    out.set(MAGIC);
    out.set(iv, MAGIC.length);
    out.set(sealed, MAGIC.length + IV_BYTES);
    return out;
  }

  async open(fileName: string, bytes: Uint8Array): Promise<Uint8Array> {
    const iv = bytes.slice(MAGIC.length, MAGIC.length + IV_BYTES);
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(fileName) },
          this.#key,
          bytes.slice(MAGIC.length + IV_BYTES),
        ),
      );
    } catch (error) {
      throw new SealedBundleError(`${fileName} does not open with the store's key`, { cause: error });
    }
  }

  /** A SHA-256 based folder name that says nothing of the model's name. */
  static async opaqueName(text: string): Promise<string> {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
    return `sealed-${Array.from(digest.subarray(0, 10), (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }
}

export function isSealed(bytes: Uint8Array): boolean {
  return bytes.length >= MAGIC.length + IV_BYTES && MAGIC.every((byte, i) => bytes[i] === byte);
}

/** Reads a bundle file, opening it when sealed (a sealed file without a sealer is an error). */
export async function readMaybeSealed(
  path: string,
  fileName: string,
  sealer: BundleSealer | null,
): Promise<Uint8Array> {
  const bytes = await Deno.readFile(path);
  if (!isSealed(bytes)) return bytes;
  if (sealer === null) {
    throw new SealedBundleError(
      `${path} is sealed with a database key, but spec.storage.encryption is not enabled`,
    );
  }
  return await sealer.open(fileName, bytes);
}

/** The files of a bundle that are sealed: model_bundle.ts's MODEL_JSON and MODEL_ONNX. */
const BUNDLE_FILES = ["model.json", "model.onnx"];

/**
 * Seals (`to: "sealed"`) or opens (`to: "clear"`) every bundle file under `modelsDir`
 * (`<source>/<folder>/model.*`), for `outpost db encrypt|decrypt`: bundles sealed with the store's
 * key would otherwise stop loading once the store is decrypted or its key changed, and bundles
 * written in clear would stay readable on an encrypted store. Each file is replaced atomically
 * (synced, renamed); files already as asked are left alone, so an interrupted run is finished by
 * running it again. Folder names are not changed. Returns how many files were rewritten.
 */
export async function convertBundles(
  modelsDir: string,
  sealer: BundleSealer,
  to: "sealed" | "clear",
): Promise<number> {
  let rewritten = 0;
  for (const source of await folders(modelsDir)) {
    for (const folder of await folders(join(modelsDir, source))) {
      for (const name of BUNDLE_FILES) {
        const path = join(modelsDir, source, folder, name);
        let bytes: Uint8Array;
        try {
          bytes = await Deno.readFile(path);
        } catch (error) {
          if (error instanceof Deno.errors.NotFound) continue;
          throw error;
        }
        if (isSealed(bytes) === (to === "sealed")) continue;
        await replaceFile(path, to === "sealed" ? await sealer.seal(name, bytes) : await sealer.open(name, bytes));
        rewritten++;
      }
    }
  }
  return rewritten;
}

async function folders(path: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(path)) if (entry.isDirectory) names.push(entry.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return names.sort();
}

async function replaceFile(path: string, bytes: Uint8Array): Promise<void> {
  const staging = `${path}.${crypto.randomUUID()}.tmp`;
  const file = await Deno.open(staging, { write: true, createNew: true });
  try {
    giveToOwnerOf(staging, path);
    try {
      for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(staging, path);
  } catch (error) {
    await Deno.remove(staging).catch(() => {});
    throw error;
  }
}
