/** A destination as Deno's --allow-net names it: host and port (IPv6 without brackets). */
export interface Destination {
  readonly host: string;
  readonly port: number;
}

const DEFAULT_PORTS: Record<string, number> = {
  "https:": 443,
  "http:": 80,
  "mqtt:": 1883,
  "mqtts:": 8883,
  "tcp:": 1883,
};

/** The destination a URL connects to, with the scheme's default port. */
export function destinationOf(url: string | URL): Destination {
  const parsed = typeof url === "string" ? new URL(url) : url;
  const host = parsed.hostname.startsWith("[") ? parsed.hostname.slice(1, -1) : parsed.hostname;
  const port = parsed.port === "" ? DEFAULT_PORTS[parsed.protocol] : Number(parsed.port);
  if (port === undefined) throw new TypeError(`No default port for scheme ${parsed.protocol}`);
  return { host: host.toLowerCase(), port };
}

export function formatDestination(destination: Destination): string {
  return destination.host.includes(":")
    ? `[${destination.host}]:${destination.port}`
    : `${destination.host}:${destination.port}`;
}

/**
 * Whether an `egressAllowed` list admits the destination, with Deno's --allow-net semantics:
 * `host` admits every port of host, `host:port` only that port. Hosts compare case-insensitively;
 * no wildcards, no resolution (an IP entry does not admit a name that resolves to it).
 */
export function isAllowed(allowlist: readonly string[], destination: Destination): boolean {
  return allowlist.some((entry) => {
    const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
    if (!match) return false;
    const host = (match[1].startsWith("[") ? match[1].slice(1, -1) : match[1]).toLowerCase();
    return host === destination.host && (match[2] === undefined || Number(match[2]) === destination.port);
  });
}

/**
 * Whether a host is this device's loopback: `localhost`, 127.0.0.0/8 or ::1 (IPv4-mapped too).
 * Traffic to it never leaves the device, so it is not egress; no name resolution is done.
 */
export function isLoopback(host: string): boolean {
  const bare = (host.startsWith("[") ? host.slice(1, -1) : host).toLowerCase();
  if (bare === "localhost" || bare === "::1") return true;
  const v4 = bare.startsWith("::ffff:") ? bare.slice(7) : bare;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}
