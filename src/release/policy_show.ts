import type { Config } from "../config/config.ts";

/** The egress allowlist and every network path, as a text diagram for operators. */
export function policyDiagram(config: Config): string {
  const api = `${config.api.listen.host}:${config.api.listen.port}`;
  const lines = [
    `Outpost "${config.name}" network policy (${config.manifestPath})`,
    "",
    "  inbound (local)",
    `    sensors, operators ──HTTP──▶ ${api}  /v1/readings, /healthz, /readyz, /v1/*` +
    (config.metrics.enabled
      ? `, /metrics${config.metrics.port !== config.api.listen.port ? ` (also :${config.metrics.port})` : ""}`
      : ""),
  ];
  if (config.mqtt) {
    lines.push(
      `    MQTT broker ${config.mqtt.broker.host}:${config.mqtt.broker.port} ──QoS 1──▶ Outpost  topics ${
        config.mqtt.topics.join(", ")
      }`,
      `    Outpost ──QoS 1──▶ MQTT broker  alerts on ${config.detection.alertTopic}`,
    );
  }
  lines.push("", "  outbound (egress: every attempt audited, rate limited, circuit-broken)");
  if (config.network.egressAllowed.length === 0) {
    lines.push("    (none: egress disabled, forwarding paused)");
  } else {
    for (const destination of config.network.egressAllowed) {
      const uses = [
        config.forwarding.http && new URL(config.forwarding.http.url).host === destination ? "HTTP sink" : null,
        config.forwarding.mqtt && new URL(config.forwarding.mqtt.url).host === destination ? "MQTT uplink" : null,
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
