import type { LimitsConfig, MqttIngestConfig } from "../config/config.ts";
import type { Egress } from "../egress/egress.ts";
import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Store } from "../store/store.ts";
import { brokerPassword, brokerSocket, describeBrokerError } from "./broker_access.ts";
import { type MqttMessage, MqttSession } from "./mqtt_session.ts";
import { type ReadingLimits, type ReadingParser, readingParser } from "./reading_schema.ts";

export type MqttSourceState = "connecting" | "connected" | "backoff" | "stopped";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const STOP_GRACE_MS = 5_000;

/** The bounds of `spec.limits` that MQTT ingest keeps. */
export type MqttLimits = ReadingLimits & Pick<LimitsConfig, "mqttPayloadBytes" | "deadLetterPayloadBytes">;

/**
 * MQTT ingest: keeps a persistent QoS 1 session to the broker, stores every valid message and
 * dead-letters invalid ones, and acknowledges each message only after its commit. Reconnects
 * with exponential backoff and jitter; a broker outage never stops the process.
 *
 * Every message is either stored or dead-lettered, and then acknowledged: a message over
 * `spec.limits.mqttPayloadBytes` arrives cut short from the session and is dead-lettered with
 * the limit and its size, so the broker never redelivers it. A dead letter keeps at most
 * `deadLetterPayloadBytes` of the payload.
 *
 * The broker connection is opened by the egress module (purpose `ingest`): allowlist (a
 * loopback broker is a local peer), Deno permission, breaker, rate limit and an audit row per
 * connection attempt (purpose `ingest+tls` for mqtts://). A refusal is a failed connect like any
 * other: logged, then backoff. So is a login the broker refuses or a certificate that does not
 * verify; their reason (broker_access.ts describeBrokerError) names the setting to look at and
 * is what readiness reports. Login and TLS files are re-read at every connect.
 */
export class MqttSource {
  readonly #config: MqttIngestConfig;
  readonly #store: Store;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #egress: Egress;
  readonly #limits: MqttLimits;
  readonly #parse: ReadingParser;
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });
  #state: MqttSourceState = "connecting";
  #lastError: string | null = null;
  #session: MqttSession | null = null;
  readonly finished: Promise<void>;

  constructor(
    config: MqttIngestConfig,
    deps: { store: Store; metrics: Metrics; log: Logger; limits: MqttLimits; egress: Egress },
    signal: AbortSignal,
  ) {
    this.#config = config;
    this.#store = deps.store;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#egress = deps.egress;
    this.#limits = deps.limits;
    this.#parse = readingParser(this.#limits);
    this.finished = this.#run(signal);
  }

  get state(): MqttSourceState {
    return this.#state;
  }

  get lastError(): string | null {
    return this.#lastError;
  }

  async #run(signal: AbortSignal): Promise<void> {
    let delayMs = BACKOFF_MIN_MS;
    while (!signal.aborted) {
      this.#state = "connecting";
      const session = await this.#connect();
      if (session) {
        const onAbort = () => {
          const started = performance.now();
          session.stop(STOP_GRACE_MS).then((unacknowledged) =>
            this.#log.info("mqtt.stopped", { unacknowledged, ms: Math.round(performance.now() - started) })
          );
        };
        signal.addEventListener("abort", onAbort, { once: true });
        const error = await session.closed;
        signal.removeEventListener("abort", onAbort);
        // Only a session the broker granted its subscription resets the backoff: one refused at
        // SUBACK (after the CONNACK that opened it) backs off like a refused connection.
        if (session.subscribed) delayMs = BACKOFF_MIN_MS;
        this.#session = null;
        this.#metrics.mqttConnected.set(0);
        if (signal.aborted) break;
        this.#lastError = error ? describeBrokerError(error, this.#config) : "closed";
        this.#log.warn("mqtt.disconnected", { error: this.#lastError });
      }
      this.#state = "backoff";
      const wait = delayMs / 2 + Math.random() * delayMs / 2;
      delayMs = Math.min(delayMs * 2, BACKOFF_MAX_MS);
      await sleep(wait, signal);
    }
    this.#state = "stopped";
  }

  async #connect(): Promise<MqttSession | null> {
    const { broker, clientId, topics, keepaliveSeconds } = this.#config;
    try {
      const password = brokerPassword(this.#config);
      const session = await MqttSession.open({
        connect: (signal) => brokerSocket(this.#egress, this.#config, "ingest", signal),
        clientId,
        ...(this.#config.username === undefined ? {} : { username: this.#config.username }),
        ...(password === undefined ? {} : { password }),
        topics,
        keepaliveSeconds,
        maxPayloadBytes: this.#limits.mqttPayloadBytes,
        keptPayloadBytes: this.#limits.deadLetterPayloadBytes,
        onMessage: (message) => this.#handle(message),
      });
      this.#session = session;
      this.#state = "connected";
      this.#lastError = null;
      this.#metrics.mqttConnected.set(1);
      this.#log.info("mqtt.connected", {
        broker: `${broker.host}:${broker.port}`,
        tls: this.#config.tls,
        clientId,
        topics,
      });
      return session;
    } catch (error) {
      this.#lastError = describeBrokerError(error, this.#config);
      this.#log.warn("mqtt.connect_failed", { broker: `${broker.host}:${broker.port}`, error: this.#lastError });
      return null;
    }
  }

  /** Resolves once the message is committed (or dead-lettered); rejects leave it unacknowledged. */
  async #handle(message: MqttMessage): Promise<void> {
    if (message.payloadBytes > this.#limits.mqttPayloadBytes) {
      const limit = this.#limits.mqttPayloadBytes;
      return this.#refuse(
        message,
        new LimitExceededError(
          limitKey("mqttPayloadBytes"),
          limit,
          `Payload of ${message.payloadBytes} bytes is over the limit of ${limit} bytes`,
          413,
        ),
      );
    }
    const device = deviceFromTopic(message.topic, this.#config.topics);
    let body: unknown;
    try {
      body = JSON.parse(this.#decoder.decode(message.payload));
    } catch (error) {
      return this.#deadLetter(message, `invalid JSON: ${(error as Error).message}`);
    }
    const parsed = this.#parse(body, device);
    if (!parsed.ok) {
      if (parsed.limit) return this.#refuse(message, parsed.limit);
      for (const key of parsed.limitKeys ?? []) this.#metrics.limitRefusals.inc({ limit: key });
      const reason = parsed.issues.slice(0, 20).map((issue) => `${issue.path}: ${issue.message}`).join("; ");
      return this.#deadLetter(message, reason);
    }
    try {
      const result = await this.#store.write(parsed.readings, "mqtt");
      this.#metrics.readings.inc({ source: "mqtt", result: "stored" }, result.inserted);
      if (result.duplicates > 0) this.#metrics.readings.inc({ source: "mqtt", result: "duplicate" }, result.duplicates);
    } catch (error) {
      // A bound that refuses this message for good (e.g. spec.limits.devices) is final: dead-letter
      // it, or its redelivery would stop intake. Overload (503) and store errors are retried.
      if (error instanceof LimitExceededError && error.status !== 503) return this.#refuse(message, error);
      this.#metrics.readings.inc({ source: "mqtt", result: "rejected" }, parsed.readings.length);
      throw error;
    }
  }

  /** A message refused at a bound of `spec.limits`: dead-lettered and counted under the limit's key. */
  #refuse(message: MqttMessage, error: LimitExceededError): Promise<void> {
    this.#metrics.limitRefusals.inc({ limit: error.key });
    return this.#deadLetter(message, `${error.key}: ${error.message}`);
  }

  /** The store keeps at most `deadLetterPayloadBytes` of the payload and says how much there was. */
  async #deadLetter(message: MqttMessage, reason: string): Promise<void> {
    const { topic, payload, payloadBytes } = message;
    const kept = await this.#store.writeDeadLetter({ source: "mqtt", topic, reason, payload, payloadBytes });
    this.#metrics.readings.inc({ source: "mqtt", result: "invalid" });
    if (kept) {
      this.#metrics.deadLetters.inc({ source: "mqtt" });
      this.#log.debug("mqtt.dead_letter", { topic: message.topic, reason });
    } else {
      this.#metrics.limitRefusals.inc({ limit: "spec.storage.maxSizeMB" });
      this.#log.debug("mqtt.dead_letter_not_kept", { topic: message.topic, reason, cause: "store full" });
    }
  }
}

/** The device named by the first `+` of the filter that matches the topic, if any. */
export function deviceFromTopic(topic: string, filters: readonly string[]): string | undefined {
  const levels = topic.split("/");
  for (const filter of filters) {
    const parts = filter.split("/");
    let device: string | undefined;
    let matches = true;
    for (let i = 0; i < parts.length; i++) {
      if (parts[i] === "#") break;
      if (i >= levels.length || (parts[i] !== "+" && parts[i] !== levels[i])) {
        matches = false;
        break;
      }
      if (parts[i] === "+" && device === undefined) device = levels[i];
    }
    if (matches && (parts.includes("#") || parts.length === levels.length)) return device || undefined;
  }
  return undefined;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
