/**
 * The audit log's HMAC key. It never enters the database: it comes from a file named by the
 * config (`OUTPOST_AUDIT_KEY_FILE`, systemd's `$CREDENTIALS_DIRECTORY/audit-key`,
 * `spec.storage.auditKeyFile`), or, with none of those, from `<dataDir>/keys/audit.key`, which
 * `run` creates (mode 0600) on first start. Whoever holds the key can rewrite the log
 * undetected, so the stronger setup is a credential that is not on the data volume.
 *
 * Key file: at least 32 bytes (trailing whitespace ignored), e.g. `openssl rand -hex 32`.
 */
import { dirname } from "node:path";

export type AuditKeySource = "env" | "credentials" | "manifest" | "default";

/** Where the key is, as the config resolved it. */
export interface AuditKeyLocation {
  readonly path: string;
  readonly source: AuditKeySource;
}

/** No usable key: missing, unreadable or too short. */
export class AuditKeyError extends Error {
  readonly path: string;
  constructor(message: string, path: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AuditKeyError";
    this.path = path;
  }
}

const MIN_KEY_BYTES = 32;
const encoder = new TextEncoder();

export class AuditKey {
  readonly #key: CryptoKey;
  /** A public fingerprint of the key (an HMAC of a fixed label): tells a wrong key from a forged MAC. */
  readonly id: string;
  readonly location: AuditKeyLocation;

  private constructor(key: CryptoKey, id: string, location: AuditKeyLocation) {
    this.#key = key;
    this.id = id;
    this.location = location;
  }

  /**
   * Reads the key file. With `create`, a missing default key file (source "default" only) is
   * generated; a key named explicitly is never invented.
   */
  static async load(location: AuditKeyLocation, options: { create?: boolean } = {}): Promise<AuditKey> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(location.path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound) || !options.create || location.source !== "default") {
        throw new AuditKeyError(`Cannot read the audit key: ${(error as Error).message}`, location.path, {
          cause: error,
        });
      }
      bytes = await generateKeyFile(location.path);
    }
    return await AuditKey.fromBytes(bytes, location);
  }

  static async fromBytes(bytes: Uint8Array, location: AuditKeyLocation): Promise<AuditKey> {
    const material = trimEnd(bytes);
    if (material.length < MIN_KEY_BYTES) {
      throw new AuditKeyError(
        `Audit key too short: ${material.length} bytes, at least ${MIN_KEY_BYTES} needed`,
        location.path,
      );
    }
    const key = await crypto.subtle.importKey("raw", material, { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    const id = (await hmacHex(key, "outpost-audit-key-id")).slice(0, 16);
    return new AuditKey(key, id, location);
  }

  /** HMAC-SHA-256 of `text` under a domain label, as lowercase hex. */
  mac(domain: string, text: string): Promise<string> {
    return hmacHex(this.#key, `${domain}\n${text}`);
  }
}

async function hmacHex(key: CryptoKey, text: string): Promise<string> {
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(text)));
  return Array.from(signature, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Writes 32 random bytes as hex to `path` (0600, in a 0700 folder), without replacing a file. */
async function generateKeyFile(path: string): Promise<Uint8Array> {
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const random = crypto.getRandomValues(new Uint8Array(32));
  const text = encoder.encode(Array.from(random, (byte) => byte.toString(16).padStart(2, "0")).join("") + "\n");
  const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
  try {
    for (let written = 0; written < text.length;) written += await file.write(text.subarray(written));
    await file.syncData();
  } finally {
    file.close();
  }
  return text;
}

/** A copy without trailing newlines and spaces (`echo ... > file` adds one). */
function trimEnd(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  let end = bytes.length;
  while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d || bytes[end - 1] === 0x20)) end--;
  return bytes.slice(0, end);
}
