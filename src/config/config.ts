import { createHash } from "node:crypto";
import { resolve } from "node:path";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { formatIssuePath } from "../zod_issue.ts";
import { ConfigError, type ConfigIssue } from "./errors.ts";
import { type Manifest, manifestSchema } from "./schema.ts";

/** Environment variables Outpost reads; the permission flags allow exactly these. */
export const OUTPOST_ENV_VARS = ["OUTPOST_ADMIN_TOKEN"] as const;

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
}

/** The resolved, frozen configuration every component receives a slice of. */
export interface Config {
  readonly name: string;
  readonly manifestPath: string;
  readonly manifestSha256: string;
  readonly network: { readonly egressAllowed: readonly string[] };
  readonly api: { readonly listen: HostPort; readonly bodyLimitBytes: number };
  readonly metrics: { readonly enabled: boolean; readonly port: number };
  readonly logLevel: "debug" | "info" | "warn" | "error";
  readonly mqtt: MqttIngestConfig | null;
  readonly storage: {
    readonly dataDir: string;
    readonly retentionHours: number;
    readonly maxSizeBytes: number;
  };
}

export interface ConfigOverrides {
  dataDir?: string;
}

export const DEFAULT_MANIFEST = "policies/outpost.yaml";

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
  const result = manifestSchema.safeParse(document.toJS() ?? {});
  if (!result.success) throw new ConfigError(manifestPath, result.error.issues.map(toConfigIssue));
  return deepFreeze(resolveConfig(result.data, text, manifestPath, overrides));
}

function resolveConfig(manifest: Manifest, text: string, manifestPath: string, overrides: ConfigOverrides): Config {
  const spec = manifest.spec;
  const listen = splitHostPort(spec.api.listen);
  const mqtt = spec.ingest.mqtt;
  return {
    name: manifest.metadata.name,
    manifestPath,
    manifestSha256: createHash("sha256").update(text).digest("hex"),
    network: { egressAllowed: spec.network.egressAllowed },
    api: { listen, bodyLimitBytes: spec.api.bodyLimitBytes },
    metrics: {
      enabled: spec.observability.metricsEnabled,
      port: spec.observability.metricsPort ?? listen.port,
    },
    logLevel: spec.observability.logLevel,
    mqtt: mqtt.url === undefined ? null : {
      url: mqtt.url,
      broker: brokerAddress(mqtt.url),
      topics: mqtt.topics,
      clientId: mqtt.clientId ?? `outpost-${manifest.metadata.name}`,
      keepaliveSeconds: mqtt.keepaliveSeconds,
    },
    storage: {
      dataDir: resolve(overrides.dataDir ?? spec.storage.dataDir),
      retentionHours: spec.storage.retentionHours,
      maxSizeBytes: Math.round(spec.storage.maxSizeMB * 1024 * 1024),
    },
  };
}

/** Splits `host:port` (IPv6 in brackets) into its parts; the port defaults to `defaultPort`. */
export function splitHostPort(value: string, defaultPort = 0): HostPort {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(value);
  if (!match) throw new TypeError(`Not host[:port]: ${value}`);
  const host = match[1].startsWith("[") ? match[1].slice(1, -1) : match[1];
  return { host, port: match[2] === undefined ? defaultPort : Number(match[2]) };
}

function brokerAddress(url: string): HostPort {
  const parsed = new URL(url);
  const host = parsed.hostname.startsWith("[") ? parsed.hostname.slice(1, -1) : parsed.hostname;
  return { host, port: parsed.port === "" ? 1883 : Number(parsed.port) };
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

/** The admin API token, from the environment only (never the manifest). */
export function readAdminToken(): string | undefined {
  const token = Deno.env.get("OUTPOST_ADMIN_TOKEN");
  return token === undefined || token === "" ? undefined : token;
}
