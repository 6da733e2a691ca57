/**
 * Ingest tokens: bearer tokens that may write the readings of the devices they name, and no others.
 *
 * A token reads `opt_<id>_<secret>`: `id` is 12 hex characters, public (listed, logged, named in
 * refusals); `secret` is 32 random bytes in base64url, shown once when issued and stored only as
 * its SHA-256 (a 256-bit random secret needs no slow hash). A token's `devices` are device ids,
 * or prefixes ending in `*` (`line-3-*`; `*` alone is every device).
 *
 * The set lives in `<dataDir>/ingest-tokens.json` (0600), written atomically by the admin routes
 * and by `outpost tokens` (which works while the service runs). Every change reads, changes and
 * writes the file under an exclusive lock on `ingest-tokens.lock` (flock), so the CLI and the
 * routes writing at the same moment cannot drop each other's change (a lost revocation would
 * bring a revoked token back). The service re-reads the file when
 * it changes (checked at most once a second), so issuing, rotating and revoking need no restart.
 * A file that cannot be read or parsed refuses every token (fail closed: a revocation must hold).
 *
 * Rotation gives a token a new secret under the same id and scope; the old secret stays valid for
 * a grace period (wall-clock time: a clock step shortens or lengthens it) so senders can move over.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { dirname, join } from "node:path";
import { z } from "zod";
import type { LimitsConfig } from "../config/config.ts";
import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";
import { giveToOwnerOf } from "../store/file_owner.ts";

export const TOKENS_FILE = "ingest-tokens.json";
/** Held (flock) around every read-modify-write of TOKENS_FILE, by the service and the CLI alike. */
export const TOKENS_LOCK_FILE = "ingest-tokens.lock";
const TOKEN_PATTERN = /^opt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const RELOAD_CHECK_MS = 1_000;
/** Longest rotation grace: a week. */
export const MAX_GRACE_SECONDS = 7 * 86_400;

// A hand-edited expiry that is not a date must not keep an old secret valid for good: such a file is refused.
const expiry = z.string().refine((value) => Number.isFinite(Date.parse(value)), { error: "not a date" });
const storedSecret = z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/), expiresAt: expiry.nullable() }).strict();
const storedToken = z.object({
  id: z.string().regex(/^[0-9a-f]{12}$/),
  label: z.string().max(256),
  devices: z.array(z.string().min(1)),
  createdAt: z.string(),
  secrets: z.array(storedSecret).min(1).max(2),
}).strict();
const tokenFile = z.object({ version: z.literal(1), tokens: z.array(storedToken) }).strict();

type StoredToken = z.infer<typeof storedToken>;
type TokenFile = z.infer<typeof tokenFile>;

/** What a token's holder may do, once authenticated. */
export interface TokenScope {
  readonly id: string;
  /** Whether this token may write readings of `device`. */
  allows(device: string): boolean;
}

/** A token as listed: never its secret. */
export interface PublicToken {
  id: string;
  label: string;
  devices: string[];
  createdAt: string;
  /** When the previous secret stops working after a rotation; null when only one is valid. */
  previousSecretExpiresAt: string | null;
}

export type AuthResult =
  | { ok: true; scope: TokenScope }
  | { ok: false; reason: "missing" | "malformed" | "unknown" | "expired" | "store_unreadable" };

/** The token file could not be read or parsed; `outpost tokens` and the routes refuse to overwrite it. */
export class TokenStoreError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TokenStoreError";
  }
}

/** Bad input to issue or rotate (not a limit): the admin route answers 400. */
export class TokenRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenRequestError";
  }
}

/** No token with this id. */
export class UnknownTokenError extends Error {
  constructor(id: string) {
    super(`No ingest token with id ${JSON.stringify(id)}`);
    this.name = "UnknownTokenError";
  }
}

export type TokenLimits = Pick<LimitsConfig, "ingestTokens" | "devicesPerToken" | "nameLength">;

interface Loaded {
  stamp: string;
  byId: Map<string, { stored: StoredToken; scope: TokenScope }> | null;
}

export class IngestTokens {
  readonly path: string;
  readonly #limits: TokenLimits;
  readonly #now: () => number;
  #loaded: Loaded = { stamp: "", byId: new Map() };
  #checkedAt = -Infinity;

  constructor(dataDir: string, limits: TokenLimits, now: () => number = Date.now) {
    this.path = join(dataDir, TOKENS_FILE);
    this.#limits = limits;
    this.#now = now;
  }

  /** Checks an `Authorization` header value. Cost: one stat a second, one SHA-256 per call. */
  authenticate(header: string | undefined): AuthResult {
    if (header === undefined || header === "") return { ok: false, reason: "missing" };
    const match = /^Bearer\s+(\S{1,128})$/i.exec(header);
    const token = match ? TOKEN_PATTERN.exec(match[1]) : null;
    if (token === null) return { ok: false, reason: "malformed" };
    const byId = this.#current();
    if (byId === null) return { ok: false, reason: "store_unreadable" };
    const entry = byId.get(token[1]);
    if (entry === undefined) return { ok: false, reason: "unknown" };
    const given = sha256(token[2]);
    let expired = false;
    for (const secret of entry.stored.secrets) {
      if (!timingSafeEqual(given, Buffer.from(secret.sha256, "hex"))) continue;
      if (secret.expiresAt !== null && Date.parse(secret.expiresAt) <= this.#now()) expired = true;
      else return { ok: true, scope: entry.scope };
    }
    return { ok: false, reason: expired ? "expired" : "unknown" };
  }

  list(): PublicToken[] {
    return this.#read().tokens.map(toPublic);
  }

  /** A new token for `devices`; the answer holds the only copy of its secret. */
  issue(request: { label?: string; devices: readonly string[] }): PublicToken & { token: string } {
    const devices = this.#checkDevices(request.devices);
    const label = request.label ?? "";
    if (label.length > 256) throw new TokenRequestError("label: at most 256 characters");
    return this.#change((file) => {
      if (file.tokens.length >= this.#limits.ingestTokens) {
        throw new LimitExceededError(
          limitKey("ingestTokens"),
          this.#limits.ingestTokens,
          `At most ${this.#limits.ingestTokens} ingest tokens; revoke one first`,
          422,
        );
      }
      const id = randomBytes(6).toString("hex");
      const secret = randomBytes(32).toString("base64url");
      const stored: StoredToken = {
        id,
        label,
        devices,
        createdAt: new Date(this.#now()).toISOString(),
        secrets: [{ sha256: sha256(secret).toString("hex"), expiresAt: null }],
      };
      return [{ version: 1, tokens: [...file.tokens, stored] }, { ...toPublic(stored), token: `opt_${id}_${secret}` }];
    });
  }

  /** A new secret for token `id`; the current one keeps working for `graceSeconds`. */
  rotate(id: string, graceSeconds: number): PublicToken & { token: string } {
    if (!Number.isInteger(graceSeconds) || graceSeconds < 0 || graceSeconds > MAX_GRACE_SECONDS) {
      throw new TokenRequestError(`graceSeconds: a whole number from 0 to ${MAX_GRACE_SECONDS}`);
    }
    return this.#change((file) => {
      const stored = file.tokens.find((token) => token.id === id);
      if (stored === undefined) throw new UnknownTokenError(id);
      const secret = randomBytes(32).toString("base64url");
      const now = this.#now();
      const current = stored.secrets.find((s) => s.expiresAt === null) ?? stored.secrets[stored.secrets.length - 1];
      const rotated: StoredToken = {
        ...stored,
        secrets: [
          ...(graceSeconds > 0 ? [{ ...current, expiresAt: new Date(now + graceSeconds * 1000).toISOString() }] : []),
          { sha256: sha256(secret).toString("hex"), expiresAt: null },
        ],
      };
      return [
        { version: 1, tokens: file.tokens.map((token) => token.id === id ? rotated : token) },
        { ...toPublic(rotated), token: `opt_${id}_${secret}` },
      ];
    });
  }

  /** Revokes token `id` (every secret of it), effective within a second in the service. */
  revoke(id: string): void {
    this.#change((file) => {
      if (!file.tokens.some((token) => token.id === id)) throw new UnknownTokenError(id);
      return [{ version: 1, tokens: file.tokens.filter((token) => token.id !== id) }, undefined];
    });
  }

  /**
   * Reads the file, applies `change` and writes its result, all under the exclusive lock: another
   * process (the CLI, or the service) changing the file meanwhile waits instead of being overwritten.
   */
  #change<T>(change: (file: TokenFile) => [TokenFile, T]): T {
    Deno.mkdirSync(dirname(this.path), { recursive: true });
    const lockPath = join(dirname(this.path), TOKENS_LOCK_FILE);
    const lock = Deno.openSync(lockPath, { read: true, write: true, create: true, mode: 0o600 });
    try {
      giveToOwnerOf(lockPath, dirname(this.path));
      lock.lockSync(true);
      const [next, result] = change(this.#read());
      this.#write(next);
      return result;
    } finally {
      lock.close();
    }
  }

  #checkDevices(devices: readonly string[]): string[] {
    const max = this.#limits.devicesPerToken;
    if (!Array.isArray(devices) || devices.length === 0) {
      throw new TokenRequestError("devices: a non-empty list of device ids or prefixes ending in *");
    }
    if (devices.length > max) {
      throw new LimitExceededError(limitKey("devicesPerToken"), max, `At most ${max} devices per token`, 422);
    }
    for (const device of devices) {
      if (typeof device !== "string" || device.length === 0 || device.length > this.#limits.nameLength + 1) {
        throw new TokenRequestError(
          `devices: each a device id or prefix of 1-${this.#limits.nameLength} characters (${limitKey("nameLength")})`,
        );
      }
      if (device.indexOf("*") !== -1 && device.indexOf("*") !== device.length - 1) {
        throw new TokenRequestError(`devices: ${JSON.stringify(device)}: * only at the end, as a prefix`);
      }
    }
    return [...new Set(devices)];
  }

  /** The parsed file for a change; a missing file is an empty set, a broken one an error. */
  #read(): TokenFile {
    let text: string;
    try {
      text = Deno.readTextFileSync(this.path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return { version: 1, tokens: [] };
      throw new TokenStoreError(`Cannot read ${this.path}: ${(error as Error).message}`, { cause: error });
    }
    try {
      return tokenFile.parse(JSON.parse(text));
    } catch (error) {
      throw new TokenStoreError(`${this.path} is not a valid token file; restore it or remove it`, { cause: error });
    }
  }

  /** Written durably (file and folder synced): a revocation must survive a power cut. */
  #write(file: TokenFile): void {
    const dir = dirname(this.path);
    Deno.mkdirSync(dir, { recursive: true });
    const staging = `${this.path}.${crypto.randomUUID()}.tmp`;
    const bytes = new TextEncoder().encode(JSON.stringify(file, null, 1) + "\n");
    const handle = Deno.openSync(staging, { write: true, createNew: true, mode: 0o600 });
    try {
      giveToOwnerOf(staging, dir);
      try {
        for (let written = 0; written < bytes.length;) written += handle.writeSync(bytes.subarray(written));
        handle.syncDataSync();
      } finally {
        handle.close();
      }
      Deno.renameSync(staging, this.path);
    } catch (error) {
      // A full disk: the change fails, and leaves no partial copy behind to pile up.
      try {
        Deno.removeSync(staging);
      } catch { /* already gone */ }
      throw error;
    }
    const folder = Deno.openSync(dir, { read: true });
    try {
      folder.syncSync();
    } finally {
      folder.close();
    }
    this.#checkedAt = -Infinity;
  }

  /** The token set as the file holds it now (re-read when it changed); null when unreadable. */
  #current(): Loaded["byId"] {
    const now = performance.now();
    if (now - this.#checkedAt < RELOAD_CHECK_MS) return this.#loaded.byId;
    this.#checkedAt = now;
    let stamp: string;
    try {
      const info = Deno.statSync(this.path);
      stamp = `${info.ino}:${info.size}:${info.mtime?.getTime()}`;
    } catch (error) {
      stamp = error instanceof Deno.errors.NotFound ? "absent" : "unreadable";
    }
    if (stamp === this.#loaded.stamp) return this.#loaded.byId;
    try {
      const file = this.#read();
      this.#loaded = {
        stamp,
        byId: new Map(file.tokens.map((stored) => [stored.id, { stored, scope: scopeOf(stored) }])),
      };
    } catch {
      this.#loaded = { stamp, byId: null };
    }
    return this.#loaded.byId;
  }
}

function scopeOf(stored: StoredToken): TokenScope {
  const exact = new Set(stored.devices.filter((device) => !device.endsWith("*")));
  const prefixes = stored.devices.filter((device) => device.endsWith("*")).map((device) => device.slice(0, -1));
  return {
    id: stored.id,
    allows: (device) => exact.has(device) || prefixes.some((prefix) => device.startsWith(prefix)),
  };
}

function toPublic(stored: StoredToken): PublicToken {
  const previous = stored.secrets.find((secret) => secret.expiresAt !== null);
  return {
    id: stored.id,
    label: stored.label,
    devices: stored.devices,
    createdAt: stored.createdAt,
    previousSecretExpiresAt: previous?.expiresAt ?? null,
  };
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
