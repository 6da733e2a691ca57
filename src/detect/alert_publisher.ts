/**
 * Publishes alerts to the ingest broker's alert topic (QoS 1). Alerts are recorded in `alerts`
 * first; this only marks them published after the broker's PUBACK, and republishes what is
 * left after a broker outage or a restart. The socket comes from the egress (purpose
 * `alerts`): a broker off loopback must be in `egressAllowed` (config.ts), and every connection
 * attempt is audited either way. Works with no uplink.
 */
import type { Client } from "@libsql/client";
import { MqttClient } from "mqtt";
import type { MqttIngestConfig } from "../config/config.ts";
import type { Egress } from "../egress/egress.ts";
import type { Logger } from "../observability/log.ts";
import { markAlertPublished, unpublishedAlerts } from "../store/alerts_table.ts";

const PUBACK_TIMEOUT_MS = 5_000;

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
    this.#mqtt = new MqttClient(() => deps.egress.socketSync("alerts", broker.broker), {
      clientId: `${broker.clientId}-alerts`,
      protocolVersion: 4,
      reconnectPeriod: 2_000,
      connectTimeout: 10_000,
    });
    this.#mqtt.on("connect", () => this.drain());
    this.#mqtt.on("error", (error) => this.#log.debug("detect.alert_broker_error", { error }));
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
