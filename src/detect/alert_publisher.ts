/**
 * Publishes alerts to the ingest broker's alert topic (QoS 1). Alerts are recorded in `alerts`
 * first; this only marks them published after the broker's PUBACK, and republishes what is
 * left after a broker outage or a restart. The socket comes from the egress (purpose
 * `alerts`, `alerts+tls` for mqtts://): a broker off loopback must be in `egressAllowed`
 * (config.ts), and every connection attempt is audited either way. It logs in and verifies
 * the broker exactly as ingest does (src/ingest/broker_access.ts), files re-read at every
 * connect. A refused login or a failed handshake is retried with backoff. Works with no uplink.
 */
import { Duplex } from "node:stream";
import type { Client } from "@libsql/client";
import { MqttClient } from "mqtt";
import type { MqttIngestConfig } from "../config/config.ts";
import type { Egress } from "../egress/egress.ts";
import { brokerPassword, brokerTls, describeBrokerError } from "../ingest/broker_access.ts";
import type { Logger } from "../observability/log.ts";
import { markAlertPublished, unpublishedAlerts } from "../store/alerts_table.ts";

const PUBACK_TIMEOUT_MS = 5_000;
/** Reconnect delay after a connection, doubled after every failed attempt up to the max. */
const RECONNECT_MIN_MS = 2_000;
const RECONNECT_MAX_MS = 30_000;

export class AlertPublisher {
  readonly #client: Client;
  readonly #mqtt: MqttClient;
  readonly #topic: string;
  readonly #log: Logger;
  readonly #onPublished: () => void;
  #draining: Promise<void> | null = null;
  #again = false;

  constructor(
    client: Client,
    broker: MqttIngestConfig,
    deps: { topic: string; log: Logger; egress: Egress; onPublished?: () => void },
  ) {
    this.#client = client;
    this.#topic = deps.topic;
    this.#log = deps.log;
    this.#onPublished = deps.onPublished ?? (() => {});
    // mqtt.js calls this at every (re)connect and writes CONNECT with `options.password` right
    // after it: the password is set here, so a rotated one is used from the next connect.
    const stream = (client: MqttClient): Duplex => {
      try {
        const password = brokerPassword(broker);
        if (password !== undefined) client.options.password = password;
      } catch (error) {
        this.#log.warn("detect.alert_broker_refused", { error: (error as Error).message });
        return failedStream(error as Error);
      }
      return deps.egress.socketSync("alerts", broker.broker, broker.tls ? { tls: () => brokerTls(broker)! } : {});
    };
    this.#mqtt = new MqttClient(stream, {
      clientId: `${broker.clientId}-alerts`,
      protocolVersion: 4,
      ...(broker.username === undefined ? {} : { username: broker.username }),
      reconnectPeriod: RECONNECT_MIN_MS,
      // Without it mqtt.js never retries after a refused CONNACK: a fixed password would need a restart.
      reconnectOnConnackError: true,
      connectTimeout: 10_000,
    });
    this.#mqtt.on("connect", () => {
      this.#mqtt.options.reconnectPeriod = RECONNECT_MIN_MS;
      this.drain();
    });
    // mqtt.js schedules its reconnect on "close" before this runs: this sets the one after it.
    this.#mqtt.on("close", () => {
      this.#mqtt.options.reconnectPeriod = Math.min(this.#mqtt.options.reconnectPeriod! * 2, RECONNECT_MAX_MS);
    });
    this.#mqtt.on("error", (error) => {
      const reason = describeBrokerError(error, broker);
      // A broker that is down is routine (debug); a refused login or certificate needs an operator.
      if (reason === error.message) this.#log.debug("detect.alert_broker_error", { error });
      else this.#log.warn("detect.alert_broker_refused", { error: reason });
    });
  }

  get connected(): boolean {
    return this.#mqtt.connected;
  }

  /** Publishes every unpublished alert, oldest first. */
  drain(): Promise<void> {
    if (this.#draining) {
      this.#again = true;
      return this.#draining;
    }
    this.#draining = (async () => {
      do {
        this.#again = false;
        while (this.#mqtt.connected) {
          const pending = await unpublishedAlerts(this.#client, 100);
          if (pending.length === 0) break;
          for (const alert of pending) {
            if (!await this.#publish(alert.body)) return;
            await markAlertPublished(this.#client, alert.id, Date.now());
            this.#onPublished();
          }
        }
      } while (this.#again);
    })().catch((error) => this.#log.warn("detect.alert_publish_failed", { error })).finally(() => {
      this.#draining = null;
    });
    return this.#draining;
  }

  async #publish(body: string): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.#mqtt.publishAsync(this.#topic, body, { qos: 1 }),
        new Promise((_, reject) => timer = setTimeout(() => reject(new Error("no PUBACK")), PUBACK_TIMEOUT_MS)),
      ]);
      return true;
    } catch (error) {
      this.#log.warn("detect.alert_publish_failed", { error });
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.#draining;
    await this.#mqtt.endAsync(true);
  }
}

/** A stream that fails at once: mqtt.js sees a connection error and retries later; nothing is opened. */
function failedStream(error: Error): Duplex {
  const stream = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
  queueMicrotask(() => stream.destroy(error));
  return stream;
}
