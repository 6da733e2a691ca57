import { join, resolve } from "node:path";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { destinationOf, formatDestination, isAllowed, isLoopback } from "../egress/allowlist.ts";
import { sha256Hex } from "../sha256.ts";
import { formatIssuePath } from "../zod_issue.ts";
import type { AuditKeyLocation } from "../egress/audit_key.ts";
import { ConfigError, type ConfigIssue } from "./errors.ts";
import { type LimitsConfig, type Manifest, manifestSchema } from "./schema.ts";

export type { LimitsConfig };

/** Environment variables Outpost reads; the permission flags allow exactly these. */
export const OUTPOST_ENV_VARS = [
  "OUTPOST_ADMIN_TOKEN",
  "OUTPOST_SINK_TOKEN",
  "INVOCATION_ID",
  "OUTPOST_AUDIT_KEY_FILE",
  "OUTPOST_ADMIN_TOKEN_FILE",
  "OUTPOST_DB_KEY_FILE",
  "CREDENTIALS_DIRECTORY",
] as const;

/** A secret's file, and which setting named it. */
export interface SecretLocation {
  readonly path: string;
  readonly source: "env" | "credentials" | "manifest" | "default";
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface MqttIngestConfig {
  readonly url: string;
  readonly broker: HostPort;
  readonly topics: readonly string[];
  readonly clientId: string;
  readonly keepaliveSeconds: number;
  /** `mqtts://`: the connection is TLS. */
  readonly tls: boolean;
  readonly username?: string;
  readonly passwordFile?: string;
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

export interface ApiConfig {
  readonly listen: HostPort;
  readonly bodyLimitBytes: number;
  readonly tls: { readonly certFile: string; readonly keyFile: string } | null;
  readonly ingestAuth: "none" | "token";
  readonly insecureListen: boolean;
}

/** Priority classes of the outbox, highest first. */
export const OUTBOX_CLASSES = ["alert", "event", "aggregate", "reading"] as const;
export type OutboxClass = typeof OUTBOX_CLASSES[number];

export interface EgressConfig {
  readonly allowed: readonly string[];
  /**
   * Loopback peers the egress module connects to without them being in `allowed`: the MQTT
   * ingest broker when it is on loopback (traffic that never leaves the device). Still checked
   * against Deno's permissions and audited per connection attempt.
   */
  readonly local?: readonly string[];
  readonly rateLimit: { readonly perSecond: number; readonly burst: number };
  readonly circuitBreaker: { readonly failureThreshold: number; readonly openSeconds: number };
}

export interface ForwardingConfig {
  readonly source: string;
  readonly aggregateSeconds: number;
  readonly graceSeconds: number;
  readonly idleCloseSeconds: number;
  readonly raw: boolean;
  readonly batchSize: number;
  readonly maxBufferBytes: number;
  readonly ttlMs: Readonly<Record<OutboxClass, number>>;
  readonly backoff: { readonly minMs: number; readonly maxMs: number };
  readonly http: { readonly url: string; readonly gzip: boolean; readonly timeoutMs: number } | null;
  readonly mqtt: { readonly url: string; readonly topic: string; readonly clientId: string } | null;
}

export interface DetectionConfig {
  readonly enabled: boolean;
  readonly threads: number;
  readonly batchSize: number;
  readonly sensitivity: number;
  readonly calibration: { readonly readings: number; readonly seconds?: number };
  readonly baseline: {
    readonly adaptSeconds: number;
    readonly settleSeconds: number;
    readonly settleTolerance: number;
    readonly settleRatio: number;
    readonly acceptSeconds: number;
    readonly slowLevelTolerance: number;
  };
  readonly sensors: Readonly<
    Record<
      string,
      {
        readonly role?: "fast" | "slow";
        readonly min?: number;
        readonly max?: number;
        readonly maxRisePerMinute?: number;
      }
    >
  >;
  readonly debounce: { readonly onCount: number; readonly ofLast: number; readonly clearAfter: number };
  readonly alertTopic: string;
}

/** The resolved, frozen configuration every component receives a slice of. */
export interface Config {
  readonly name: string;
  readonly manifestPath: string;
  readonly manifestSha256: string;
  readonly network: { readonly egressAllowed: readonly string[] };
  readonly egress: EgressConfig;
  readonly forwarding: ForwardingConfig;
  readonly detection: DetectionConfig;
  readonly api: ApiConfig;
  /**
   * The admin token's file, if any: OUTPOST_ADMIN_TOKEN_FILE, systemd's credential `admin-token`,
   * or `spec.api.adminTokenFile` (OUTPOST_ADMIN_TOKEN itself wins over all).
   */
  readonly adminTokenFile: string | null;
  readonly metrics: { readonly enabled: boolean; readonly port: number };
  readonly logLevel: "debug" | "info" | "warn" | "error";
  readonly mqtt: MqttIngestConfig | null;
  readonly storage: {
    readonly dataDir: string;
    readonly retentionHours: number;
    readonly maxSizeBytes: number;
    readonly keepHours: KeepHours;
    /** Where the audit log's HMAC key is (src/egress/audit_key.ts); never in the database. */
    readonly auditKey: AuditKeyLocation;
    /** The database encryption key's file when `spec.storage.encryption.enabled` (never in the data dir). */
    readonly encryptionKey: SecretLocation | null;
  };
  readonly limits: LimitsConfig;
  /** Keys whose signatures an upgrade accepts (src/release/signature.ts); a list, so keys rotate. */
  readonly release: { readonly trustedKeys: readonly { readonly id: string; readonly publicKey: string }[] };
}

/** Retention of the tables besides readings and the outbox, in hours. */
export interface KeepHours {
  readonly deadLetters: number;
  readonly events: number;
  readonly alerts: number;
  readonly audit: number;
  readonly modelHistory: number;
}

export interface ConfigOverrides {
  dataDir?: string;
}

/** The manifest beside the program (in a compiled binary: the one embedded in it). */
export const DEFAULT_MANIFEST = join(import.meta.dirname!, "..", "..", "policies", "outpost.yaml");

/** Reads, parses and validates a manifest file; throws ConfigError listing every problem. */
export async function loadConfig(path: string, overrides: ConfigOverrides = {}): Promise<Config> {
  const manifestPath = resolve(path);
  let text: string;
  try {
    text = await Deno.readTextFile(manifestPath);
  } catch (error) {
    throw new ConfigError(manifestPath, [{ path: "(file)", message: `cannot read: ${(error as Error).message}` }], {
      cause: error,
    });
  }
  return parseConfig(text, manifestPath, overrides);
}

/** Validates manifest text; `manifestPath` anchors relative paths and error messages. */
export function parseConfig(text: string, manifestPath: string, overrides: ConfigOverrides = {}): Config {
  const document = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      manifestPath,
      document.errors.map((error) => ({ path: "(yaml)", message: error.message.split("\n")[0] })),
    );
  }
  const input = document.toJS() ?? {};
  const result = manifestSchema.safeParse(input);
  // The checks across fields run also when the schema fails (on the fields that are valid), so an
  // operator sees every problem at once, not the next one after fixing the others.
  const spec = result.success ? result.data.spec : validSpec((input as { spec?: unknown }).spec);
  const issues = [
    ...(result.success ? [] : result.error.issues.map(toConfigIssue)),
    ...(spec ? [...egressIssues(spec), ...listenIssues(spec), ...encryptionKeyIssues(spec, overrides)] : []),
  ];
  if (!result.success || issues.length > 0) throw new ConfigError(manifestPath, issues);
  return deepFreeze(resolveConfig(result.data, text, manifestPath, overrides));
}

type Spec = Manifest["spec"];
const specSchema = manifestSchema.shape.spec;

/**
 * `spec` with every value the schema refuses left out (each then takes its default or is absent),
 * for the checks across fields; null when that does not settle.
 */
function validSpec(input: unknown): Spec | null {
  let spec = structuredClone(input);
  for (let round = 0; round < 8; round++) {
    const result = specSchema.safeParse(spec);
    if (result.success) return result.data;
    for (const issue of result.error.issues) {
      const paths = issue.code === "unrecognized_keys" ? issue.keys.map((key) => [...issue.path, key]) : [issue.path];
      for (const path of paths) spec = dropped(spec, path);
    }
    spec = compacted(spec);
  }
  return null;
}

const DROPPED = Symbol("dropped");

/**
 * `value` with what `path` names marked dropped (array items, removed by `compacted`) or deleted;
 * when that is gone already, its parent.
 */
function dropped(value: unknown, path: readonly PropertyKey[]): unknown {
  if (path.length === 0 || value === null || typeof value !== "object") return {};
  const [key, ...rest] = path;
  const node = value as Record<PropertyKey, unknown>;
  if (!(key in node)) return {};
  if (rest.length > 0 && node[key] !== null && typeof node[key] === "object") node[key] = dropped(node[key], rest);
  else if (Array.isArray(node)) node[key] = DROPPED;
  else delete node[key];
  return value;
}

function compacted(value: unknown): unknown {
  if (Array.isArray(value)) return value.filter((item) => item !== DROPPED).map(compacted);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, compacted(item)]));
}

/**
 * An API reachable from the network must authenticate who writes and encrypt what crosses the
 * wire: beyond loopback, TLS and ingest tokens are required unless `insecureListen` says otherwise.
 */
function listenIssues(spec: Spec): ConfigIssue[] {
  const api = spec.api;
  const { host } = splitHostPort(api.listen);
  if (isLoopback(host) || api.insecureListen) return [];
  const missing = [
    ...(api.tls === undefined ? ["TLS (spec.api.tls)"] : []),
    ...(api.ingestAuth !== "token" ? ["ingest tokens (spec.api.ingestAuth: token)"] : []),
  ];
  if (missing.length === 0) return [];
  return [{
    path: "spec.api.listen",
    message: `${api.listen} is beyond loopback without ${missing.join(" and ")}; ` +
      "set them, or spec.api.insecureListen: true to accept readings and tokens in clear from anyone who can reach it",
  }];
}

function encryptionKeyIssues(spec: Spec, overrides: ConfigOverrides): ConfigIssue[] {
  const key = encryptionKeyLocation(spec);
  if (key === null) return [];
  if (key.source === "default") {
    return [{
      path: "spec.storage.encryption.enabled",
      message: "needs a key: OUTPOST_DB_KEY_FILE, systemd's credential db-key, or spec.storage.encryption.keyFile",
    }];
  }
  if (isInside(key.path, dataDirOf(spec, overrides))) {
    return [{
      path: "spec.storage.encryption.keyFile",
      message: `${key.path} is inside the data dir: a stolen disk would carry its own key`,
    }];
  }
  return [];
}

/**
 * Fail closed: every configured sink, and the MQTT ingest broker unless it is on loopback, must
 * be reachable under `spec.network.egressAllowed` (the broker also receives alerts: a remote one
 * is a destination like any other).
 */
function egressIssues(spec: Spec): ConfigIssue[] {
  const allowed = spec.network.egressAllowed;
  const destinations = {
    "spec.forwarding.http.url": spec.forwarding.http?.url,
    "spec.forwarding.mqtt.url": spec.forwarding.mqtt?.url,
    "spec.ingest.mqtt.url": spec.ingest.mqtt.url,
  };
  const issues: ConfigIssue[] = [];
  for (const [path, url] of Object.entries(destinations)) {
    if (url === undefined) continue;
    const destination = destinationOf(url);
    if (path === "spec.ingest.mqtt.url" && isLoopback(destination.host)) continue;
    if (!isAllowed(allowed, destination)) {
      issues.push({
        path,
        message: `${formatDestination(destination)} is not in spec.network.egressAllowed (${
          allowed.length === 0 ? "empty: egress disabled" : allowed.join(", ")
        })${
          path === "spec.ingest.mqtt.url" ? ": a broker off loopback is an egress destination (alerts go to it)" : ""
        }`,
      });
    }
  }
  return issues;
}

function resolveConfig(manifest: Manifest, text: string, manifestPath: string, overrides: ConfigOverrides): Config {
  const spec = manifest.spec;
  const listen = splitHostPort(spec.api.listen);
  const mqtt = spec.ingest.mqtt;
  return {
    name: manifest.metadata.name,
    manifestPath,
    manifestSha256: sha256Hex(text),
    network: { egressAllowed: spec.network.egressAllowed },
    egress: {
      allowed: spec.network.egressAllowed,
      local: mqtt.url !== undefined && isLoopback(destinationOf(mqtt.url).host)
        ? [formatDestination(destinationOf(mqtt.url))]
        : [],
      rateLimit: spec.network.rateLimit,
      circuitBreaker: spec.network.circuitBreaker,
    },
    forwarding: resolveForwarding(manifest),
    detection: spec.detection,
    api: {
      listen,
      bodyLimitBytes: spec.api.bodyLimitBytes,
      tls: spec.api.tls ? { certFile: resolve(spec.api.tls.certFile), keyFile: resolve(spec.api.tls.keyFile) } : null,
      ingestAuth: spec.api.ingestAuth,
      insecureListen: spec.api.insecureListen,
    },
    adminTokenFile: secretLocation("OUTPOST_ADMIN_TOKEN_FILE", "admin-token", spec.api.adminTokenFile, "")?.path ??
      null,
    metrics: {
      enabled: spec.observability.metricsEnabled,
      port: spec.observability.metricsPort ?? listen.port,
    },
    logLevel: spec.observability.logLevel,
    mqtt: mqtt.url === undefined ? null : {
      url: mqtt.url,
      broker: destinationOf(mqtt.url),
      topics: mqtt.topics,
      clientId: mqtt.clientId ?? `outpost-${manifest.metadata.name}`,
      keepaliveSeconds: mqtt.keepaliveSeconds,
      tls: mqtt.url.startsWith("mqtts:"),
      ...(mqtt.username === undefined ? {} : { username: mqtt.username }),
      ...(mqtt.passwordFile === undefined ? {} : { passwordFile: resolve(mqtt.passwordFile) }),
      ...(mqtt.tls?.caFile === undefined ? {} : { caFile: resolve(mqtt.tls.caFile) }),
      ...(mqtt.tls?.certFile === undefined ? {} : { certFile: resolve(mqtt.tls.certFile) }),
      ...(mqtt.tls?.keyFile === undefined ? {} : { keyFile: resolve(mqtt.tls.keyFile) }),
    },
    storage: {
      dataDir: dataDirOf(spec, overrides),
      retentionHours: spec.storage.retentionHours,
      maxSizeBytes: Math.round(spec.storage.maxSizeMB * 1024 * 1024),
      keepHours: spec.storage.keepHours,
      auditKey: auditKeyLocation(spec.storage.auditKeyFile, dataDirOf(spec, overrides)),
      encryptionKey: encryptionKeyLocation(spec),
    },
    limits: spec.limits,
    release: { trustedKeys: spec.release.trustedKeys },
  };
}

function dataDirOf(spec: Spec, overrides: ConfigOverrides): string {
  return resolve(overrides.dataDir ?? spec.storage.dataDir);
}

/** The database key's file when the store is encrypted (`source: "default"`, no path: none given). */
function encryptionKeyLocation(spec: Spec): SecretLocation | null {
  if (!spec.storage.encryption.enabled) return null;
  return secretLocation("OUTPOST_DB_KEY_FILE", "db-key", spec.storage.encryption.keyFile, "") ??
    { path: "", source: "default" };
}

function resolveForwarding(manifest: Manifest): ForwardingConfig {
  const forwarding = manifest.spec.forwarding;
  const hours = (value: number) => Math.round(value * 3_600_000);
  return {
    source: manifest.metadata.name,
    aggregateSeconds: forwarding.aggregateSeconds,
    graceSeconds: forwarding.graceSeconds,
    idleCloseSeconds: forwarding.idleCloseSeconds,
    raw: forwarding.raw,
    batchSize: forwarding.batchSize,
    maxBufferBytes: Math.round(forwarding.maxBufferMB * 1024 * 1024),
    ttlMs: {
      alert: hours(forwarding.ttlHours.alert),
      event: hours(forwarding.ttlHours.event),
      aggregate: hours(forwarding.ttlHours.aggregate),
      reading: hours(forwarding.ttlHours.reading),
    },
    backoff: forwarding.backoff,
    http: forwarding.http ?? null,
    mqtt: forwarding.mqtt
      ? { ...forwarding.mqtt, clientId: forwarding.mqtt.clientId ?? `outpost-${manifest.metadata.name}-uplink` }
      : null,
  };
}

/** Splits `host:port` (IPv6 in brackets) into its parts; the port defaults to `defaultPort`. */
export function splitHostPort(value: string, defaultPort = 0): HostPort {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(value);
  if (!match) throw new TypeError(`Not host[:port]: ${value}`);
  const host = match[1].startsWith("[") ? match[1].slice(1, -1) : match[1];
  return { host, port: match[2] === undefined ? defaultPort : Number(match[2]) };
}

function toConfigIssue(issue: z.core.$ZodIssue): ConfigIssue {
  return { path: formatIssuePath(issue.path, "(root)"), message: issue.message };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * Where the audit key is: `OUTPOST_AUDIT_KEY_FILE`, else systemd's credential `audit-key`
 * (`LoadCredential=audit-key:...`), else `spec.storage.auditKeyFile`, else
 * `<dataDir>/keys/audit.key` (created on first start).
 */
function auditKeyLocation(manifestPath: string | undefined, dataDir: string): AuditKeyLocation {
  return secretLocation("OUTPOST_AUDIT_KEY_FILE", "audit-key", manifestPath, join(dataDir, "keys", "audit.key"))!;
}

/**
 * Whether `path` lies under `dir`, as written or once symlinks are resolved (a data dir reached
 * through a link, or a key path through one, is still the same disk).
 */
function isInside(path: string, dir: string): boolean {
  const real = (name: string) => {
    try {
      return Deno.realPathSync(name);
    } catch {
      return name; // not there yet, or not readable under these flags: as written
    }
  };
  const dirs = [dir, real(dir)];
  return [path, real(path)].some((file) => dirs.some((folder) => file.startsWith(`${folder}/`)));
}

/**
 * A secret file named by `envName`, else systemd's credential `credential`, else the manifest's
 * path, else `fallback` (no file when empty).
 */
function secretLocation(
  envName: string,
  credential: string,
  manifestPath: string | undefined,
  fallback: string,
): SecretLocation | null {
  const fromEnv = readEnv(envName);
  if (fromEnv) return { path: resolve(fromEnv), source: "env" };
  const credentials = readEnv("CREDENTIALS_DIRECTORY");
  if (credentials) {
    const path = join(credentials, credential);
    try {
      Deno.statSync(path);
      return { path, source: "credentials" };
    } catch (error) {
      // Present but not readable under these permissions: name it, so the failure says where.
      if (!(error instanceof Deno.errors.NotFound)) return { path, source: "credentials" };
    }
  }
  if (manifestPath) return { path: resolve(manifestPath), source: "manifest" };
  return fallback === "" ? null : { path: fallback, source: "default" };
}

/**
 * Files outside the data dir the service reads secrets and certificates from: the permission
 * flags allow reading exactly these.
 */
export function secretFiles(config: Config): string[] {
  const mqtt = config.mqtt;
  // Every systemd credential Outpost looks for, present or not: under these flags a missing one
  // must stat as NotFound (so the next source is used, as when the flags were derived), not as
  // NotCapable, which the lookup takes for "present but unreadable".
  const credentials = readEnv("CREDENTIALS_DIRECTORY");
  const files = [
    ...(credentials ? ["audit-key", "db-key", "admin-token"].map((name) => join(credentials, name)) : []),
    config.storage.auditKey.path,
    config.storage.encryptionKey?.path,
    config.adminTokenFile ?? undefined,
    config.api.tls?.certFile,
    config.api.tls?.keyFile,
    mqtt?.passwordFile,
    mqtt?.caFile,
    mqtt?.certFile,
    mqtt?.keyFile,
  ];
  return [
    ...new Set(
      files.filter((file): file is string =>
        file !== undefined && file !== "" && !file.startsWith(`${config.storage.dataDir}/`)
      ),
    ),
  ];
}

function readEnv(name: string): string | undefined {
  try {
    const value = Deno.env.get(name);
    return value === "" ? undefined : value;
  } catch {
    return undefined;
  }
}

/** The bearer token for the HTTP sink, from the environment only. */
export function readSinkToken(): string | undefined {
  const token = Deno.env.get("OUTPOST_SINK_TOKEN");
  return token === undefined || token === "" ? undefined : token;
}

/** Set by systemd for the processes of a unit: tells whether Outpost runs as a service. */
export function underSystemd(): boolean {
  return (Deno.env.get("INVOCATION_ID") ?? "") !== "";
}

/**
 * The admin API token: `OUTPOST_ADMIN_TOKEN`, or the file `config.adminTokenFile` names
 * (OUTPOST_ADMIN_TOKEN_FILE, systemd's `LoadCredential=admin-token:...`); never the manifest.
 * Trailing whitespace of the file is ignored; an unreadable file is an error, not "no token".
 */
export function readAdminToken(tokenFile: string | null = null): string | undefined {
  const token = Deno.env.get("OUTPOST_ADMIN_TOKEN");
  if (token !== undefined && token !== "") return token;
  if (tokenFile === null) return undefined;
  const text = Deno.readTextFileSync(tokenFile).trimEnd();
  if (text === "") throw new Error(`The admin token file ${tokenFile} is empty`);
  return text;
}
