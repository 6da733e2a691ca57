/**
 * The startup self-check: does the process hold any Deno permission beyond the flags derived from
 * the manifest (flags.ts, the same derivation `deno task start` and `deno compile` use)?
 *
 * Rules it keeps:
 * - Queries only (`Deno.permissions.querySync`): a query never prompts and never changes a grant.
 * - Every kind is checked: net (hosts and ports), read, write, ffi, run, env, sys.
 * - A probe counts only when Deno grants it and the derived flags do not cover it, so the derived
 *   flags themselves always pass (tests/permissions_test.ts runs both).
 *
 * What it cannot see: Deno offers no way to list a process's grants (`/proc/self/cmdline` needs
 * `--allow-all`), so breadth is proven by probes. Widening a derived entry is always caught (a
 * parent folder, a sibling, a whole host instead of host:port, another port, a bare flag, every
 * sys kind is enumerable). An unrelated extra grant is caught when it is one of the probes below
 * (shells and network tools, sensitive folders, metadata and private addresses, common public
 * hosts, secret-bearing variables); an arbitrary one (`--allow-net=<some other host>:<port>`) can
 * slip through. The launchers, not this check, are what guarantee the exact flags.
 */
import { basename, dirname, join } from "node:path";

/** One grant broader than derived: the flag that grants it and what it reaches. */
export interface Broadening {
  /** The Deno flag, e.g. `--allow-write`. */
  readonly flag: string;
  readonly detail: string;
}

/** What the derived flags grant, per permission kind (empty when the flag is absent). */
export interface DerivedGrants {
  readonly net: readonly string[];
  readonly read: readonly string[];
  readonly write: readonly string[];
  readonly ffi: readonly string[];
  readonly run: readonly string[];
  readonly env: readonly string[];
  readonly sys: readonly string[];
}

type Kind = keyof DerivedGrants;
const KINDS: readonly Kind[] = ["net", "read", "write", "ffi", "run", "env", "sys"];

/** Folders and files no Outpost flag ever needs; reaching one means a broader grant. */
const PROBE_PATHS = [
  "/",
  "/etc",
  "/etc/passwd",
  "/etc/shadow",
  "/etc/ssh",
  "/etc/systemd",
  "/root",
  "/home",
  "/proc",
  "/sys",
  "/dev",
  "/boot",
  "/run",
  "/tmp",
  "/var",
  "/var/lib",
  "/usr",
  "/usr/lib",
  "/lib",
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib/aarch64-linux-gnu/libc.so.6",
  "/opt",
  "/srv",
  "/mnt",
  "/media",
];

/**
 * Programs worth having: shells, interpreters, network and privilege tools. Each is probed by
 * name (Deno resolves it on PATH) and by its usual absolute paths.
 */
const PROBE_PROGRAMS = [
  "sh",
  "bash",
  "dash",
  "zsh",
  "busybox",
  "env",
  "python3",
  "python",
  "perl",
  "node",
  "deno",
  "curl",
  "wget",
  "nc",
  "ncat",
  "socat",
  "ssh",
  "scp",
  "sudo",
  "su",
  "rm",
  "dd",
  "mosquitto_pub",
  "sqlite3",
  "openssl",
];

/** Variables Outpost never reads, several of them secrets or loader controls. */
const PROBE_VARIABLES = [
  "PATH",
  "HOME",
  "USER",
  "SHELL",
  "PWD",
  "LANG",
  "TERM",
  "LD_PRELOAD",
  "LD_LIBRARY_PATH",
  "NODE_OPTIONS",
  "DENO_DIR",
  "DENO_AUTH_TOKENS",
  "DENO_CERT",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "SSH_AUTH_SOCK",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "GITHUB_TOKEN",
  "NPM_TOKEN",
  "OUTPOST_SELF_CHECK_PROBE",
];

/** Every `--allow-sys` kind Deno 2.9 knows (Deno.SysPermissionDescriptor). */
const SYS_KINDS: readonly NonNullable<Deno.SysPermissionDescriptor["kind"]>[] = [
  "loadavg",
  "hostname",
  "systemMemoryInfo",
  "networkInterfaces",
  "osRelease",
  "osUptime",
  "uid",
  "gid",
  "username",
  "cpus",
  "homedir",
  "statfs",
  "getPriority",
  "setPriority",
  "ca",
  "umask",
];

/**
 * Hosts outside any sane allowlist: documentation ranges (RFC 5737), cloud metadata, the usual
 * gateways of private networks, other loopback names, public resolvers and well-known hosts.
 */
const PROBE_HOSTS = [
  "198.51.100.7",
  "192.0.2.1",
  "203.0.113.1",
  "169.254.169.254",
  "10.0.0.1",
  "10.0.0.9",
  "172.16.0.1",
  "192.168.0.1",
  "192.168.1.1",
  "1.1.1.1",
  "8.8.8.8",
  "127.0.0.1",
  "127.0.0.2",
  "127.0.1.1",
  "localhost",
  "0.0.0.0",
  "[::1]",
  "[::]",
  "example.com",
  "www.example.com",
  "example.org",
  "example.net",
  "evil.example.com",
  "google.com",
  "github.com",
  "api.github.com",
  "registry.npmjs.org",
  "deno.land",
  "dl.deno.land",
  "jsr.io",
];

/** Ports tried on every host (besides every derived port and each derived port + 1). */
const PROBE_PORTS = [1, 9, 22, 25, 53, 80, 443, 1883, 3000, 5432, 6379, 8000, 8080, 8443, 8883, 9090, 9229, 65535];

/** Parses derived flags (`--allow-net=a,b`, ...) into what each kind grants. */
export function derivedGrants(flags: readonly string[]): DerivedGrants {
  const grants: Record<Kind, string[]> = { net: [], read: [], write: [], ffi: [], run: [], env: [], sys: [] };
  for (const flag of flags) {
    const match = /^--allow-([a-z]+)(?:=(.*))?$/.exec(flag);
    if (!match || !(KINDS as readonly string[]).includes(match[1])) continue;
    if (match[2] === undefined) throw new TypeError(`Derived flags grant a whole kind: ${flag}`);
    grants[match[1] as Kind].push(...match[2].split(",").filter((entry) => entry !== ""));
  }
  return grants;
}

/**
 * Grants the process holds beyond `derivedFlags` (the output of `expectedPermissionFlags`):
 * empty when the process is confined as derived. At most a few findings per flag, broadest first.
 */
export function broaderPermissions(derivedFlags: readonly string[]): Broadening[] {
  const derived = derivedGrants(derivedFlags);
  return [
    ...netBroadening(derived.net),
    ...pathBroadening("read", derived.read, derived.read),
    ...pathBroadening("write", derived.write, derived.write),
    ...pathBroadening("ffi", derived.ffi, [...derived.ffi, ...derived.write, ...derived.read]),
    ...runBroadening(derived.run),
    ...listBroadening("env", derived.env, PROBE_VARIABLES, (variable) => ({ name: "env", variable })),
    ...listBroadening("sys", derived.sys, SYS_KINDS, (kind) => ({ name: "sys", kind })),
  ];
}

/** One line per finding, for the refusal message and the log. */
export function describeBroadening(finding: Broadening): string {
  return `${finding.flag}: ${finding.detail}`;
}

function granted(descriptor: Deno.PermissionDescriptor): boolean {
  return Deno.permissions.querySync(descriptor).state === "granted";
}

function derivedText(entries: readonly string[]): string {
  return entries.length === 0 ? "nothing" : entries.join(", ");
}

const MAX_FINDINGS_PER_FLAG = 3;

function netBroadening(derived: readonly string[]): Broadening[] {
  const flag = "--allow-net";
  const expected = `(derived: ${derivedText(derived)})`;
  if (granted({ name: "net" })) return [{ flag, detail: `every host and port ${expected}` }];
  const derivedHosts = derived.map((entry) => splitHostPort(entry).host);
  const derivedPorts = derived.map((entry) => splitHostPort(entry).port).filter((port) => port !== null);
  const ports = [...new Set([...PROBE_PORTS, ...derivedPorts, ...derivedPorts.map((port) => port + 1)])]
    .filter((port) => port > 0 && port < 65536);
  const findings: Broadening[] = [];
  for (const host of new Set([...derivedHosts, ...PROBE_HOSTS])) {
    if (!derived.includes(host) && granted({ name: "net", host })) {
      findings.push({ flag, detail: `every port on ${host} ${expected}` });
      continue;
    }
    for (const port of ports) {
      const entry = `${host}:${port}`;
      if (derived.includes(entry) || derived.includes(host)) continue;
      if (granted({ name: "net", host: entry })) {
        findings.push({ flag, detail: `reaches ${entry}, which the manifest does not allow ${expected}` });
        break;
      }
    }
  }
  return findings.slice(0, MAX_FINDINGS_PER_FLAG);
}

function splitHostPort(entry: string): { host: string; port: number | null } {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
  if (!match) return { host: entry, port: null };
  return { host: match[1], port: match[2] === undefined ? null : Number(match[2]) };
}

/**
 * Probes for a path kind: the root folder, every ancestor of a derived entry (a parent grant), a
 * sibling of each entry (a grant of the folder's contents), and folders no flag needs. `extra`
 * adds paths that must stay out of reach for this kind (ffi: anything writable or readable).
 */
function pathBroadening(kind: "read" | "write" | "ffi", derived: readonly string[], extra: readonly string[]) {
  const flag = `--allow-${kind}`;
  const expected = `(derived: ${derivedText(derived)})`;
  if (granted({ name: kind })) return [{ flag, detail: `every path ${expected}` }];
  const probes = new Set(PROBE_PATHS);
  for (const entry of extra) {
    for (let folder = dirname(entry); folder !== dirname(folder); folder = dirname(folder)) probes.add(folder);
    probes.add(join(dirname(entry), `.${basename(entry)}-outpost-probe`));
    if (!derived.includes(entry)) probes.add(join(entry, "outpost-probe"));
  }
  const reached = [...probes]
    .filter((path) => !covered(path, derived) && granted({ name: kind, path }))
    .sort((a, b) => a.length - b.length);
  // Report the broadest: a probe under another reached probe adds nothing.
  const broadest = reached.filter((path) => !reached.some((other) => other !== path && covered(path, [other])));
  return broadest.slice(0, MAX_FINDINGS_PER_FLAG).map((path) => ({
    flag,
    detail: `reaches ${path}, outside what the manifest needs ${expected}`,
  }));
}

/** Whether Deno would let a grant of one of `roots` cover `path` (the same path or below it). */
function covered(path: string, roots: readonly string[]): boolean {
  return roots.some((root) => path === root || path.startsWith(root === "/" ? "/" : `${root}/`));
}

function runBroadening(derived: readonly string[]): Broadening[] {
  const flag = "--allow-run";
  const expected = `(derived: ${derivedText(derived)})`;
  if (granted({ name: "run" })) return [{ flag, detail: `any program ${expected}` }];
  const derivedNames = new Set(derived.map((command) => basename(command)));
  const probes = PROBE_PROGRAMS.filter((name) => !derivedNames.has(name))
    .flatMap((name) => [name, `/bin/${name}`, `/usr/bin/${name}`, `/usr/local/bin/${name}`, `/sbin/${name}`]);
  const reached = probes.filter((command) => !derived.includes(command) && granted({ name: "run", command }));
  return reached.slice(0, MAX_FINDINGS_PER_FLAG).map((command) => ({ flag, detail: `runs ${command} ${expected}` }));
}

function listBroadening<T extends string>(
  kind: "env" | "sys",
  derived: readonly string[],
  probes: readonly T[],
  descriptor: (probe: T) => Deno.PermissionDescriptor,
): Broadening[] {
  const flag = `--allow-${kind}`;
  const expected = `(derived: ${derivedText(derived)})`;
  if (granted({ name: kind })) {
    return [{ flag, detail: `${kind === "env" ? "every variable" : "every kind"} ${expected}` }];
  }
  const reached = probes.filter((probe) => !derived.includes(probe) && granted(descriptor(probe)));
  if (reached.length === 0) return [];
  return [{ flag, detail: `grants ${reached.join(", ")}, which Outpost does not need ${expected}` }];
}
