/**
 * The MQTT uplink sink, in its own module so that mqtt.js (about 7 MB resident) is loaded only
 * when the manifest configures an uplink (src/forward/pipeline.ts imports it then).
 */
import { MqttClient } from "mqtt";
import type { ForwardingConfig } from "../config/config.ts";
import { destinationOf, formatDestination } from "../egress/allowlist.ts";
import type { Egress } from "../egress/egress.ts";
import type { Logger } from "../observability/log.ts";
import { batchBody, type Sink } from "./sinks.ts";

/** Publishes batches with QoS 1 to an uplink broker; the PUBACK confirms. The socket comes from the egress. */
export class MqttUplinkSink implements Sink {
  readonly name = "mqtt" as const;
  readonly destination: string;
  readonly #client: MqttClient;
  readonly #topic: string;
  readonly #source: string;

  constructor(config: ForwardingConfig, deps: { egress: Egress; log: Logger }) {
    const uplink = config.mqtt!;
    const destination = destinationOf(uplink.url);
    this.destination = formatDestination(destination);
    this.#topic = uplink.topic;
    this.#source = config.source;
    this.#client = new MqttClient(() => deps.egress.socketSync("uplink", destination), {
      clientId: uplink.clientId,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: Math.max(1000, config.backoff.minMs),
      connectTimeout: 10_000,
      queueQoSZero: false,
    });
    this.#client.on("error", (error) => deps.log.debug("forward.uplink_error", { error }));
  }

  async send(batchKey: string, itemBodies: readonly string[], signal: AbortSignal): Promise<void> {
    if (!this.#client.connected) throw new Error(`MQTT uplink ${this.destination} not connected`);
    const published = this.#client.publishAsync(this.#topic, batchBody(this.#source, batchKey, itemBodies), { qos: 1 });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort = () => {};
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`No PUBACK from ${this.destination} within 10 s`)), 10_000);
      onAbort = () => reject(new Error(`Delivery to ${this.destination} aborted: shutting down`));
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      await Promise.race([published, timeout]);
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    }
  }

  async close(): Promise<void> {
    await this.#client.endAsync(true);
  }
}
