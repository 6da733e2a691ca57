import { z } from "zod";
import { rawPublicKey } from "../release/signature.ts";

const HOST = String
  .raw`(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])`;
const HOST_PORT = new RegExp(`^${HOST}(?::(\\d{1,5}))?$`);
const HOST_REQUIRED_PORT = new RegExp(`^${HOST}:(\\d{1,5})$`);

function validPort(text: string | undefined): boolean {
  if (text === undefined) return true;
  const port = Number(text);
  return port >= 1 && port <= 65535;
}

/** `host[:port]`, as in `spec.network.egressAllowed`. */
export const hostPort = z.string().refine(
  (value) => validPort(HOST_PORT.exec(value)?.[1]) && HOST_PORT.test(value),
  { error: (issue) => `${JSON.stringify(issue.input)} is not host[:port]` },
);

/** `host:port` with the port required, as in `spec.api.listen`. */
export const listenAddress = z.string().refine(
  (value) => HOST_REQUIRED_PORT.test(value) && validPort(HOST_REQUIRED_PORT.exec(value)?.[1]),
  { error: (issue) => `${JSON.stringify(issue.input)} is not host:port (e.g. "127.0.0.1:8080")` },
);

const mqttUrl = z.string().refine((value) => {
  try {
    const url = new URL(value);
    return ["mqtt:", "tcp:", "mqtts:"].includes(url.protocol) && url.hostname !== "" && url.username === "" &&
      url.password === "";
  } catch {
    return false;
  }
}, {
  error: (issue) =>
    `${JSON.stringify(issue.input)} is not an mqtt://host[:port] or mqtts://host[:port] URL (credentials go in ` +
    "username and passwordFile, never in the URL)",
});

/** A file path the service reads a secret or certificate from. */
const filePath = z.string().min(1).max(4096);

const topicFilter = z.string().min(1).max(256).refine(
  (value) => !/\+[^/]|[^/]\+|#./.test(value),
  { error: (issue) => `${JSON.stringify(issue.input)} is not a valid MQTT topic filter` },
);

const httpUrl = z.string().refine((value) => {
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
  } catch {
    return false;
  }
}, { error: (issue) => `${JSON.stringify(issue.input)} is not an http(s):// URL` });

const ttlHours = z.number().positive().max(24 * 3650);

const forwardingSchema = z.object({
  aggregateSeconds: z.number().int().min(1).max(86_400).default(60),
  /** A window closes once a reading this far past its end arrives for the device. */
  graceSeconds: z.number().min(0).max(86_400).default(10),
  /** ...or when it has seen no reading for this long. */
  idleCloseSeconds: z.number().positive().max(86_400).default(120),
  raw: z.boolean().default(false),
  batchSize: z.number().int().min(1).max(10_000).default(500),
  maxBufferMB: z.number().positive().max(1024 * 1024).default(256),
  ttlHours: z.object({
    alert: ttlHours.default(24 * 30),
    event: ttlHours.default(24 * 30),
    aggregate: ttlHours.default(24 * 7),
    reading: ttlHours.default(24),
  }).strict().prefault({}),
  backoff: z.object({
    minMs: z.number().int().min(10).max(600_000).default(500),
    maxMs: z.number().int().min(10).max(3_600_000).default(60_000),
  }).strict().prefault({}),
  http: z.object({
    url: httpUrl,
    gzip: z.boolean().default(true),
    timeoutMs: z.number().int().min(100).max(300_000).default(10_000),
  }).strict().optional(),
  mqtt: z.object({
    url: mqttUrl,
    topic: z.string().min(1).max(256).refine((value) => !/[+#]/.test(value), "must not contain wildcards")
      .default("outpost/uplink"),
    clientId: z.string().min(1).max(64).optional(),
  }).strict().optional(),
}).strict();

const detectionSchema = z.object({
  enabled: z.boolean().default(true),
  /** onnxruntime intra-op threads. */
  threads: z.number().int().min(1).max(16).default(1),
  /** Readings scored per onnxruntime call at most. */
  batchSize: z.number().int().min(1).max(10_000).default(256),
  /**
   * How readily a deviation alarms: the alarm threshold is 6 standard deviations of a feature
   * divided by this (2 halves the deviation needed; 0.5 doubles it). README "Detection".
   */
  sensitivity: z.number().min(0.1).max(10).default(1),
  calibration: z.object({
    /**
     * Readings a new device calibrates on. At most 5,000: a calibration holds them in memory (64
     * sensors x 5,000 readings fit the heap).
     */
    readings: z.number().int().min(20).max(5_000).default(400),
    /**
     * Calibrate on this many seconds of reading time instead (a 10 Hz device would otherwise
     * calibrate on 40 s); `readings` still bounds it.
     */
    seconds: z.number().int().min(10).max(86_400).optional(),
  }).strict().prefault({}),
  baseline: z.object({
    /** Time constant of the baseline's adaptation while the device is normal (reading time). */
    adaptSeconds: z.number().min(10).max(7 * 86_400).default(600),
    /** During an episode, the plant counts as settled after this long without moving... */
    settleSeconds: z.number().min(5).max(86_400).default(60),
    /** ...by more than this share of the alarm threshold on any sensor's level. */
    settleTolerance: z.number().gt(0).max(10).default(0.5),
    /** A settled plant whose score fell below this share of the episode's peak becomes the new normal... */
    settleRatio: z.number().gt(0).max(1).default(0.6),
    /** ...and so does one that stays settled this long, whatever its score. */
    acceptSeconds: z.number().min(5).max(7 * 86_400).default(900),
    /** A slow sensor's level alarms only this many times further from the baseline than a fast one's. */
    slowLevelTolerance: z.number().min(1).max(100).default(3),
  }).strict().prefault({}),
  /** Per sensor name: its role, and for slow sensors optional site limits. README "Detection". */
  sensors: z.record(
    z.string().min(1).max(128),
    z.object({
      role: z.enum(["fast", "slow"]).optional(),
      // Bounded so that the float32 parameters the graph receives stay finite.
      min: z.number().min(-1e15).max(1e15).optional(),
      max: z.number().min(-1e15).max(1e15).optional(),
      maxRisePerMinute: z.number().min(1e-9).max(1e15).optional(),
    }).strict().refine((s) => s.min === undefined || s.max === undefined || s.min < s.max, {
      error: "min must be below max",
      path: ["min"],
    }),
  ).refine((sensors) => Object.keys(sensors).length <= 1_000, "at most 1000 sensors").default({}),
  debounce: z.object({
    /** An episode starts when this many... */
    onCount: z.number().int().min(1).max(1000).default(3),
    /** ...of the last this many readings exceed the threshold... */
    ofLast: z.number().int().min(1).max(1000).default(5),
    /** ...and ends after this many readings in a row below it. */
    clearAfter: z.number().int().min(1).max(1000).default(3),
  }).strict().prefault({}).refine((d) => d.onCount <= d.ofLast, {
    error: "onCount must not exceed ofLast",
    path: ["onCount"],
  }),
  /** Local MQTT topic for alerts (needs spec.ingest.mqtt.url). */
  alertTopic: z.string().min(1).max(256).refine((value) => !/[+#]/.test(value), "must not contain wildcards")
    .default("outpost/alerts"),
}).strict();

/**
 * Bounds on everything a client controls. Each is checked at a cost bounded by the limit itself,
 * and every refusal names its key (`spec.limits.<name>`) and is counted in
 * `outpost_limit_refusals_total{limit}`. README "Limits" documents each one.
 */
const limitsSchema = z.object({
  readingsPerRequest: z.number().int().min(1).max(100_000).default(10_000),
  sensorsPerReading: z.number().int().min(1).max(1_000).default(64),
  /** Sensors a device's model uses at most: calibration keeps the most frequent ones. */
  sensorsPerDevice: z.number().int().min(1).max(1_000).default(64),
  /** Distinct devices the store keeps readings of; new devices beyond it are refused. */
  devices: z.number().int().min(1).max(1_000_000).default(1_000),
  /**
   * Readings dated further ahead of this device's clock are refused (while that clock is
   * plausible: not before the release date). A sensor's clock may lead by this much.
   */
  maxClockSkewSeconds: z.number().int().min(0).max(10 * 365 * 86_400).default(600),
  /** Characters in a device id or a sensor name, on every path (HTTP body, MQTT payload and topic). */
  nameLength: z.number().int().min(1).max(1_024).default(128),
  mqttPayloadBytes: z.number().int().min(1_024).max(16 * 1024 * 1024).default(256 * 1024),
  modelUploadBytes: z.number().int().min(1_024).max(64 * 1024 * 1024).default(16 * 1024 * 1024),
  /** Nodes in an uploaded model's graph. */
  modelNodes: z.number().int().min(1).max(1_000_000).default(4_096),
  /**
   * Bytes of tensors one scoring run of an uploaded model may make (all of them, at
   * spec.detection.batchSize rows): its working memory, known before it is run.
   */
  modelTensorBytes: z.number().int().min(64 * 1024).max(1024 * 1024 * 1024).default(16 * 1024 * 1024),
  /** Ingest requests whose bodies are read and parsed at once; others wait in a bounded queue. */
  ingestConcurrency: z.number().int().min(1).max(256).default(4),
  ingestQueue: z.number().int().min(0).max(10_000).default(64),
  ingestQueueWaitMs: z.number().int().min(0).max(60_000).default(5_000),
  /** Readings queued for the next commit at most; beyond it ingest answers 503. */
  writerPendingRows: z.number().int().min(1_000).max(1_000_000).default(50_000),
  /** Bytes of an invalid payload kept in its dead letter (the rest is cut off and counted). */
  deadLetterPayloadBytes: z.number().int().min(0).max(1024 * 1024).default(4_096),
  /** Open HTTP connections at most; more are answered 503 and closed. */
  connections: z.number().int().min(1).max(100_000).default(256),
  headersTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
  /** Whole request, headers and body, must arrive within this. */
  requestTimeoutMs: z.number().int().min(100).max(3_600_000).default(30_000),
  keepAliveTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
  /** Ingest tokens that exist at once (spec.api.ingestAuth: token). */
  ingestTokens: z.number().int().min(1).max(100_000).default(1_000),
  /** Device ids or prefixes one ingest token may name. */
  devicesPerToken: z.number().int().min(1).max(100_000).default(1_000),
  /** Hours one `GET /v1/devices/{device}/series` may span: its cost grows with the minutes in range. */
  seriesRangeHours: z.number().positive().max(24 * 3650).default(192),
  /**
   * Reads whose cost grows with what is stored (charts, sorted device listings) computed at once;
   * others wait their turn, so that many at once cannot hold the event loop or the V8 heap.
   */
  heavyReads: z.number().int().min(1).max(64).default(2),
}).strict();

export const manifestSchema = z.object({
  apiVersion: z.literal("fde/v1"),
  kind: z.literal("Deployment"),
  metadata: z.object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "must be lowercase letters, digits and dashes"),
  }).strict(),
  spec: z.object({
    network: z.object({
      egressAllowed: z.array(hostPort).default([]),
      egressBlocked: z.array(z.literal("*")).default(["*"]),
      rateLimit: z.object({
        perSecond: z.number().positive().max(10_000).default(20),
        burst: z.number().int().min(1).max(100_000).default(40),
      }).strict().prefault({}),
      circuitBreaker: z.object({
        failureThreshold: z.number().int().min(1).max(1000).default(5),
        openSeconds: z.number().positive().max(3600).default(30),
      }).strict().prefault({}),
    }).strict().prefault({}),
    observability: z.object({
      metricsEnabled: z.boolean().default(true),
      metricsPort: z.number().int().min(1).max(65535).optional(),
      logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
    }).strict().prefault({}),
    api: z.object({
      listen: listenAddress.default("127.0.0.1:8080"),
      bodyLimitBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(256 * 1024),
      /** Serve the API over TLS with these PEM files (re-read when they change). */
      tls: z.object({ certFile: filePath, keyFile: filePath }).strict().optional(),
      /** `token`: ingest needs a bearer token bound to the devices it may write (README "Ingest tokens"). */
      ingestAuth: z.enum(["none", "token"]).default("none"),
      /** Listen beyond loopback without TLS or without ingest tokens. Refused otherwise. */
      insecureListen: z.boolean().default(false),
      /** The admin token's file (OUTPOST_ADMIN_TOKEN and OUTPOST_ADMIN_TOKEN_FILE win over it). */
      adminTokenFile: filePath.optional(),
    }).strict().prefault({}),
    ingest: z.object({
      mqtt: z.object({
        url: mqttUrl.optional(),
        topics: z.array(topicFilter).min(1).default(["outpost/+/readings"]),
        clientId: z.string().min(1).max(64).optional(),
        keepaliveSeconds: z.number().int().min(5).max(3600).default(30),
        /** Broker login; the password is read from `passwordFile`, never from the manifest. */
        username: z.string().min(1).max(256).optional(),
        passwordFile: filePath.optional(),
        /** For mqtts:// brokers: a CA to trust instead of the system's, and a client certificate. */
        tls: z.object({ caFile: filePath.optional(), certFile: filePath.optional(), keyFile: filePath.optional() })
          .strict().refine((tls) => (tls.certFile === undefined) === (tls.keyFile === undefined), {
            error: "certFile and keyFile go together",
            path: ["certFile"],
          }).optional(),
      }).strict().prefault({}).refine((mqtt) => mqtt.passwordFile === undefined || mqtt.username !== undefined, {
        error: "passwordFile needs username",
        path: ["passwordFile"],
      }).refine((mqtt) => mqtt.tls === undefined || mqtt.url?.startsWith("mqtts:"), {
        error: "tls needs an mqtts:// url",
        path: ["tls"],
      }),
    }).strict().prefault({}),
    storage: z.object({
      dataDir: z.string().min(1).default("./data"),
      retentionHours: z.number().positive().max(24 * 3650).default(168),
      maxSizeMB: z.number().positive().max(1024 * 1024).default(1024),
      /** How long the other tables keep rows (the outbox has its own TTLs per class). */
      keepHours: z.object({
        deadLetters: z.number().positive().max(24 * 3650).default(168),
        events: z.number().positive().max(24 * 3650).default(24 * 90),
        alerts: z.number().positive().max(24 * 3650).default(24 * 30),
        /** Compliance logs: 90 days unless the site says otherwise; pruning leaves a checkpoint. */
        audit: z.number().positive().max(24 * 3650).default(24 * 90),
        /** Each scope's model history (src/store/assignment_history.ts); its newest row always stays. */
        modelHistory: z.number().positive().max(24 * 3650).default(24 * 365),
      }).strict().prefault({}),
      /** The audit log's HMAC key file (OUTPOST_AUDIT_KEY_FILE and systemd's credential win over it). */
      auditKeyFile: z.string().min(1).optional(),
      /**
       * Encrypt the database at rest (libSQL encryption). The key comes from OUTPOST_DB_KEY_FILE,
       * systemd's credential `db-key`, or `keyFile`; never from the data dir. README "Encryption at rest".
       */
      encryption: z.object({ enabled: z.boolean().default(false), keyFile: filePath.optional() }).strict()
        .prefault({}),
    }).strict().prefault({}),
    detection: detectionSchema.prefault({}),
    forwarding: forwardingSchema.prefault({}),
    limits: limitsSchema.prefault({}),
    release: z.object({
      /** Ed25519 public keys whose signatures `upgrade` accepts (src/release/signature.ts). */
      trustedKeys: z.array(
        z.object({
          id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "must be letters, digits, dots, dashes, underscores"),
          publicKey: z.string().refine((value) => {
            try {
              rawPublicKey(value);
              return true;
            } catch {
              return false;
            }
          }, { error: "must be an Ed25519 public key: base64 of its 32 raw bytes or of its SPKI DER" }),
        }).strict(),
      ).default([]).refine((keys) => new Set(keys.map((key) => key.id)).size === keys.length, {
        error: "key ids must be unique",
      }),
    }).strict().prefault({}),
  }).strict().prefault({}),
}).strict();

export type Manifest = z.output<typeof manifestSchema>;
export type LimitsConfig = Readonly<z.output<typeof limitsSchema>>;
