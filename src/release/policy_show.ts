import type { Config } from "../config/config.ts";
import { destinationOf, formatDestination, isAllowed, isLoopback } from "../egress/allowlist.ts";
import { brokerTransport } from "../ingest/broker_access.ts";

/** The egress allowlist and every network path, as a text diagram for operators. */
export function policyDiagram(config: Config): string {
  const api = `${config.api.listen.host}:${config.api.listen.port}`;
  const lines = [
    `Outpost "${config.name}" network policy (${config.manifestPath})`,
    "",
    "  inbound (local)",
    `    sensors, operators ──${config.api.tls ? "HTTPS" : "HTTP"}──▶ ${api}  /v1/readings${
      config.api.ingestAuth === "token" ? " (device-bound ingest tokens)" : ""
    }, /healthz, /readyz, /v1/*` +
    (config.metrics.enabled
      ? `, /metrics${config.metrics.port !== config.api.listen.port ? ` (also :${config.metrics.port})` : ""}`
      : ""),
  ];
  // Outpost opens the broker connection (through the egress module): on loopback it is a local
  // peer; anywhere else it is an egress destination, listed below with its uses.
  const broker = config.mqtt ? formatDestination(config.mqtt.broker) : null;
  const localBroker = config.mqtt !== null && isLoopback(config.mqtt.broker.host);
  if (config.mqtt && localBroker) {
    lines.push(
      `    MQTT broker ${broker} (loopback, not egress; Outpost connects, each connection audited; ${
        brokerTransport(config.mqtt)
      })`,
      `      ──QoS 1──▶ Outpost  topics ${config.mqtt.topics.join(", ")}`,
      `      ◀──QoS 1── Outpost  alerts on ${config.detection.alertTopic}`,
    );
  }
  lines.push("", "  outbound (egress: every attempt audited, rate limited, circuit-broken)");
  if (config.network.egressAllowed.length === 0) {
    lines.push("    (none: egress disabled, forwarding paused)");
  } else {
    for (const destination of config.network.egressAllowed) {
      const uses = [
        config.forwarding.http && isAllowed([destination], destinationOf(config.forwarding.http.url))
          ? "HTTP sink"
          : null,
        config.forwarding.mqtt && isAllowed([destination], destinationOf(config.forwarding.mqtt.url))
          ? "MQTT uplink"
          : null,
        config.mqtt && !localBroker && isAllowed([destination], config.mqtt.broker)
          ? `MQTT ingest broker: readings from ${
            config.mqtt.topics.join(", ")
          }, alerts to ${config.detection.alertTopic}; ${brokerTransport(config.mqtt)}`
          : null,
      ].filter(Boolean);
      lines.push(`    Outpost ──▶ ${destination}${uses.length > 0 ? `  (${uses.join(", ")})` : ""}`);
    }
  }
  lines.push(
    "    Outpost ──✖──▶ anything else  (egressBlocked: *)",
    "",
    "  enforced by: the egress module · Deno --allow-net · systemd IPAddressDeny=any / IPAddressAllow",
  );
  return lines.join("\n");
}
