/**
 * The database encryption key (`spec.storage.encryption`). It never enters the data dir: it comes
 * from a file the config names (`OUTPOST_DB_KEY_FILE`, systemd's `$CREDENTIALS_DIRECTORY/db-key`,
 * `spec.storage.encryption.keyFile`), so a stolen data volume carries no key. libSQL derives the
 * page key from it (SQLite3 Multiple Ciphers, AES-256-CBC); whoever holds it reads the buffer, and
 * without it the buffer is lost.
 *
 * Key file: text, at least 32 bytes (trailing whitespace ignored), e.g. `openssl rand -hex 32`.
 * The key itself is never logged: the object prints as its location only.
 */
import type { SecretLocation } from "../config/config.ts";

/** No usable key: missing, unreadable, too short or not text. */
export class DatabaseKeyError extends Error {
  readonly path: string;
  readonly source: SecretLocation["source"];
  constructor(message: string, location: SecretLocation, options?: ErrorOptions) {
    super(message, options);
    this.name = "DatabaseKeyError";
    this.path = location.path;
    this.source = location.source;
  }
}

const MIN_KEY_BYTES = 32;

/** Where a key came from, for messages: "/run/credentials/outpost.service/db-key (systemd credential db-key)". */
export function describeKeyLocation(location: SecretLocation): string {
  const setting = {
    env: "OUTPOST_DB_KEY_FILE",
    credentials: "systemd credential db-key",
    manifest: "spec.storage.encryption.keyFile",
    default: "no key configured",
  }[location.source];
  return `${location.path} (${setting})`;
}

export class DatabaseKey {
  readonly #text: string;
  readonly location: SecretLocation;

  private constructor(text: string, location: SecretLocation) {
    this.#text = text;
    this.location = location;
  }

  /** Reads and checks the key file; throws DatabaseKeyError naming the file and the setting. */
  static async load(location: SecretLocation): Promise<DatabaseKey> {
    const where = describeKeyLocation(location);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(location.path);
    } catch (error) {
      throw new DatabaseKeyError(
        `Cannot read the database key ${where}: ${(error as Error).message}`,
        location,
        { cause: error },
      );
    }
    return DatabaseKey.fromBytes(bytes, location);
  }

  static fromBytes(bytes: Uint8Array, location: SecretLocation): DatabaseKey {
    const where = describeKeyLocation(location);
    let end = bytes.length;
    while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d || bytes[end - 1] === 0x20)) end--;
    const material = bytes.subarray(0, end);
    if (material.length < MIN_KEY_BYTES) {
      throw new DatabaseKeyError(
        `Database key too short in ${where}: ${material.length} bytes, at least ${MIN_KEY_BYTES} needed ` +
          "(e.g. openssl rand -hex 32)",
        location,
      );
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(material);
    } catch {
      text = "\0";
    }
    // libSQL takes the key as a string: binary bytes would not survive the conversion unchanged.
    if (text.includes("\0")) {
      throw new DatabaseKeyError(
        `Database key in ${where} is not text: write it as text, e.g. openssl rand -hex 32`,
        location,
      );
    }
    return new DatabaseKey(text, location);
  }

  /** The key for libSQL's `encryptionKey`. Only src/store/ calls this; never log what it returns. */
  reveal(): string {
    return this.#text;
  }

  /** The key's bytes as hex, for a `hexkey=` URI parameter (VACUUM INTO an encrypted copy). */
  revealHex(): string {
    return Array.from(new TextEncoder().encode(this.#text), (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  toJSON(): { location: SecretLocation } {
    return { location: this.location };
  }

  toString(): string {
    return `DatabaseKey(${describeKeyLocation(this.location)})`;
  }

  [Symbol.for("Deno.customInspect")](): string {
    return this.toString();
  }
}
