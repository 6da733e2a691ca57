import { isIP } from "node:net";
import type { Config } from "../config/config.ts";
import { splitHostPort } from "../config/config.ts";

export type Resolver = (host: string) => Promise<string[]>;

export interface NetworkRules {
  /** systemd directives for the [Service] section. */
  directives: string[];
  /** Hosts that could not be resolved at render time (their traffic stays blocked by the OS). */
  unresolved: { host: string; error: string }[];
}

/** Resolves A and AAAA records with Deno's resolver (needs --allow-net for the host). */
export const dnsResolver: Resolver = async (host) => {
  const addresses: string[] = [];
  for (const type of ["A", "AAAA"] as const) {
    try {
      addresses.push(...await Deno.resolveDns(host, type));
    } catch (error) {
      if (type === "A" && !(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  if (addresses.length === 0) throw new Error("no A or AAAA record");
  return addresses;
};

/**
 * The egress allowlist (plus the MQTT ingest broker) as systemd's IP firewall: deny everything,
 * allow loopback and the destinations' addresses. Host names are resolved now, at render time:
 * if a name later resolves elsewhere, the OS blocks it until the unit is rendered again. systemd
 * filters by address, not port: the Deno layer still holds the port.
 */
export async function renderNetworkRules(config: Config, resolve: Resolver = dnsResolver): Promise<NetworkRules> {
  const hosts = new Set<string>();
  for (const entry of config.network.egressAllowed) hosts.add(splitHostPort(entry).host);
  if (config.mqtt) hosts.add(config.mqtt.broker.host);
  const allowed = new Set<string>(["localhost"]);
  const unresolved: NetworkRules["unresolved"] = [];
  for (const host of [...hosts].sort()) {
    if (host === "localhost" || isIP(host) !== 0) {
      allowed.add(host);
      continue;
    }
    try {
      for (const address of await resolve(host)) allowed.add(address);
    } catch (error) {
      unresolved.push({ host, error: (error as Error).message });
    }
  }
  return {
    directives: [
      "IPAddressDeny=any",
      `IPAddressAllow=${[...allowed].join(" ")}`,
      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ],
    unresolved,
  };
}
