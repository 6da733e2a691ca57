/**
 * How Outpost reaches the ingest broker (`spec.ingest.mqtt`): its login and, for mqtts://, the
 * TLS material. The ingest session (mqtt_source.ts) and the alert publisher connect with the same
 * settings, through the egress module.
 *
 * The files are read at every (re)connect, so a rotated password or certificate takes effect on
 * the next connection without a restart (reading them here, not in the config module, is what
 * allows that). `checkBrokerFiles` reads every one of them once at start: a missing, empty or
 * malformed file fails the start naming its manifest key, instead of a service that runs and
 * retries a login that cannot work. The password is never logged or put in an error message.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import type { Socket } from "node:net";
import type { MqttIngestConfig } from "../config/config.ts";
import type { Egress, TlsMaterial } from "../egress/egress.ts";

/** A file named by `spec.ingest.mqtt` cannot be used; `key` is its manifest key. */
export class BrokerFileError extends Error {
  readonly key: string;
  readonly path: string;

  constructor(key: string, path: string, problem: string, options?: ErrorOptions) {
    super(`Broker file ${key} cannot be used: ${path}: ${problem}`, options);
    this.name = "BrokerFileError";
    this.key = key;
    this.path = path;
  }
}

const KEYS = {
  passwordFile: "spec.ingest.mqtt.passwordFile",
  caFile: "spec.ingest.mqtt.tls.caFile",
  certFile: "spec.ingest.mqtt.tls.certFile",
  keyFile: "spec.ingest.mqtt.tls.keyFile",
} as const;

/** The password from `passwordFile`, trailing whitespace trimmed; undefined when none is configured. */
export function brokerPassword(config: MqttIngestConfig): string | undefined {
  if (config.passwordFile === undefined) return undefined;
  const password = readFile("passwordFile", config.passwordFile).trimEnd();
  if (password === "") throw new BrokerFileError(KEYS.passwordFile, config.passwordFile, "the file is empty");
  return password;
}

/** The TLS material for an mqtts:// broker (undefined for mqtt://): only what the manifest names. */
export function brokerTls(config: MqttIngestConfig): TlsMaterial | undefined {
  if (!config.tls) return undefined;
  return {
    ...(config.caFile === undefined ? {} : { ca: readFile("caFile", config.caFile) }),
    ...(config.certFile === undefined ? {} : { cert: readFile("certFile", config.certFile) }),
    ...(config.keyFile === undefined ? {} : { key: readFile("keyFile", config.keyFile) }),
  };
}

/** Reads and parses every file the broker settings name; throws the first problem as BrokerFileError. */
export function checkBrokerFiles(config: MqttIngestConfig): void {
  brokerPassword(config);
  const tls = brokerTls(config);
  if (tls?.ca !== undefined) parsed("caFile", config.caFile!, () => new X509Certificate(tls.ca!), "no PEM certificate");
  if (tls?.cert !== undefined && tls.key !== undefined) {
    const cert = parsed("certFile", config.certFile!, () => new X509Certificate(tls.cert!), "no PEM certificate");
    const key = parsed("keyFile", config.keyFile!, () => createPrivateKey(tls.key!), "no PEM private key");
    if (!cert.checkPrivateKey(key)) {
      throw new BrokerFileError(KEYS.keyFile, config.keyFile!, `not the key of the certificate in ${config.certFile}`);
    }
  }
}

/** Opens the broker socket through the egress checks (purpose `ingest` or `alerts`), with TLS for mqtts://. */
export async function brokerSocket(
  egress: Egress,
  config: MqttIngestConfig,
  purpose: string,
  signal: AbortSignal,
): Promise<Socket> {
  const tls = brokerTls(config);
  return await egress.socket(purpose, config.broker, { signal, ...(tls ? { tls } : {}) });
}

/** CONNACK return codes of MQTT 3.1.1 (§3.2.2.3) as operators read them. */
const CONNACK_REASONS: Record<number, string> = {
  1: "unacceptable protocol version",
  2: "client identifier rejected",
  3: "server unavailable",
  4: "bad username or password",
  5: "not authorized",
};

/** The broker answered CONNECT with a refusal; `returnCode` is the CONNACK code. */
export class BrokerRefusedError extends Error {
  readonly returnCode: number;

  constructor(returnCode: number) {
    super(`Broker refused the connection: ${CONNACK_REASONS[returnCode] ?? "unknown reason"} (CONNACK ${returnCode})`);
    this.name = "BrokerRefusedError";
    this.returnCode = returnCode;
  }
}

/** OpenSSL-style codes of a server certificate that does not verify against the trusted CAs. */
const UNTRUSTED_CODES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
]);

/**
 * A connection error as an operator reads it: which setting to look at for a refused login, an
 * untrusted or misnamed broker certificate, or a broker that wants a client certificate. Other
 * errors keep their message.
 */
export function describeBrokerError(error: unknown, config: MqttIngestConfig): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown })?.code;
  // mqtt.js (the alert publisher) reports a refusal as "Connection refused: ..." with the code.
  const returnCode = error instanceof BrokerRefusedError
    ? error.returnCode
    : typeof code === "number" && message.startsWith("Connection refused")
    ? code
    : undefined;
  if (returnCode === 4 || returnCode === 5) {
    return config.username === undefined
      ? `${message}: the broker wants a login (spec.ingest.mqtt.username, passwordFile)`
      : `${message}: check spec.ingest.mqtt.username "${config.username}" and passwordFile, and the broker's ACL`;
  }
  if (typeof code === "string" && UNTRUSTED_CODES.has(code)) {
    return `TLS: the broker's certificate is not trusted (${message}): ` +
      (config.caFile === undefined
        ? "set spec.ingest.mqtt.tls.caFile to the CA that signed it"
        : `it is not signed by the CA in ${config.caFile}`);
  }
  if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID") {
    return `TLS: the broker's certificate is outside its validity period (${message}): renew it, or check the clock`;
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return `TLS: the broker's certificate does not name ${config.broker.host} (${message})`;
  }
  if (/CERTIFICATE_REQUIRED|CertificateRequired|certificate required/i.test(`${code} ${message}`)) {
    return `TLS: the broker requires a client certificate (${message}): ` +
      (config.certFile === undefined
        ? "set spec.ingest.mqtt.tls.certFile and keyFile"
        : `it refused the one in ${config.certFile}`);
  }
  if (/BAD_CERTIFICATE|UNKNOWN_CA|BadCertificate|UnknownCA/i.test(`${code} ${message}`)) {
    return `TLS: the broker refused the client certificate in ${config.certFile ?? "(none)"} (${message})`;
  }
  return message;
}

/** How the broker connection is secured, in a few words (policy show). */
export function brokerTransport(config: MqttIngestConfig): string {
  const tls = config.tls
    ? `TLS${config.caFile ? `, CA ${config.caFile}` : ", default CAs"}${config.certFile ? ", client certificate" : ""}`
    : "plain TCP";
  return `${tls}; ${config.username === undefined ? "no login" : `login as "${config.username}"`}`;
}

function readFile(field: keyof typeof KEYS, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    throw new BrokerFileError(KEYS[field], path, (error as Error).message, { cause: error });
  }
}

function parsed<T>(field: keyof typeof KEYS, path: string, parse: () => T, expected: string): T {
  try {
    return parse();
  } catch (error) {
    throw new BrokerFileError(KEYS[field], path, `${expected} (${(error as Error).message})`, { cause: error });
  }
}
