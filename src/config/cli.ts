import { parseArgs } from "node:util";
import { DEFAULT_MANIFEST } from "./config.ts";

export type Command =
  | { name: "run"; manifest: string; dataDir?: string; unsafeBroadPermissions: boolean }
  | { name: "check"; manifest: string; dataDir?: string; deployment: boolean; root: string; service: string }
  | { name: "policy-show"; manifest: string }
  | { name: "audit-verify"; manifest: string; dataDir?: string; file?: string }
  | { name: "audit-export"; manifest: string; dataDir?: string; out: string }
  | { name: "db"; action: "encrypt" | "decrypt"; manifest: string; dataDir?: string }
  | { name: "wait-ready"; manifest: string; timeoutSeconds: number; root?: string; pid?: number }
  | { name: "upgrade"; binary: string; release: ReleaseArgs }
  | { name: "rollback"; release: ReleaseArgs }
  | { name: "resume"; release: ReleaseArgs }
  | { name: "service"; action: "start" | "stop" | "status"; release: ReleaseArgs }
  | { name: "version"; manifest: string }
  | { name: "sign"; key: string; files: string[]; kind?: "binary" | "release" | "policy" | "model" }
  | { name: "keygen"; out: string }
  | { name: "tokens"; manifest: string; dataDir?: string; request: TokenRequest }
  | { name: "help"; text: string };

export type TokenRequest =
  | { action: "list" }
  | { action: "issue"; devices: string[]; label?: string }
  | { action: "rotate"; id: string; graceSeconds: number }
  | { action: "revoke"; id: string };

export interface ReleaseArgs {
  manifest: string;
  root: string;
  service?: string;
  readyUrl?: string;
  readyTimeoutSeconds: number;
  keep: number;
  /** upgrade only: accept an unsigned release when the policy trusts no key. */
  allowUnsigned: boolean;
}

/** Bad command-line usage; main prints the message and the usage and exits 2. */
export class UsageError extends Error {
  readonly usage: string;
  constructor(message: string, usage: string) {
    super(message);
    this.name = "UsageError";
    this.usage = usage;
  }
}

/** The commands as `outpost --help` lists them. */
const COMMANDS: readonly (readonly [string, string])[] = [
  ["run", "Start Outpost (default when no command is given)"],
  ["check", "Validate a manifest without starting"],
  ["audit", '"audit verify|export": check the egress audit log, or export it for an archive'],
  ["policy", '"policy show": the egress allowlist and the network paths as a diagram'],
  ["db", '"db encrypt|decrypt": convert the stopped store to or from encryption at rest'],
  ["wait-ready", "Wait until the local /readyz answers 200 (systemd's start gate)"],
  ["upgrade", "Install a new release binary, health-gated, rolling back by itself on failure"],
  ["rollback", "Return to the previous confirmed release, offline"],
  ["resume", "Resume an interrupted upgrade before a start (systemd's ExecStartPre)"],
  ["service", '"service start|stop|status": run Outpost without systemd'],
  ["tokens", '"tokens list|issue|rotate|revoke": ingest tokens bound to devices'],
  ["sign", "Sign release bundles (binary, release.json, policy, model) with an Ed25519 key"],
  ["keygen", "Create an Ed25519 signing key and print its public key for spec.release.trustedKeys"],
  ["version", "Print the version and the release's signature"],
];

/** Two columns, the second aligned past the longest entry of the first. */
function columns(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([name]) => name.length)) + 2;
  return rows.map(([name, text]) => `  ${name.padEnd(width)}${text}`).join("\n");
}

export const USAGE = {
  main: `Usage: outpost <command> [options]

Commands:
${columns(COMMANDS)}

Run "outpost <command> --help" for a command's options. From a checkout, run "deno task outpost <command>":
it derives the Deno permission flags each command needs from the manifest.`,
  run: `Usage: outpost run [--manifest PATH] [--data-dir DIR] [--unsafe-broad-permissions]

  --manifest PATH               Deployment manifest (default: policies/outpost.yaml beside the program)
  --data-dir DIR                Overrides spec.storage.dataDir
  --unsafe-broad-permissions    Start even when Deno grants more network access than the manifest`,
  check: `Usage: outpost check [--manifest PATH] [--data-dir DIR] [--deployment [--root DIR] [--service UNIT]]

Validates the manifest, prints the resolved configuration, the permission flags and the egress
layers, and exits 0 when valid or 2 listing every problem. With --deployment, checks the running
device against the secure-edge pattern's success criteria instead (exit 0 when all pass, else 1).`,
  policy: `Usage: outpost policy show [--manifest PATH]

Prints the egress allowlist and the network paths as a diagram.`,
  audit: `Usage: outpost audit verify [--manifest PATH] [--data-dir DIR] [--file EXPORT]
       outpost audit export --out FILE [--manifest PATH] [--data-dir DIR]

verify checks the egress audit log (or an export of it, with --file) against the audit key and
the signed head file, and prints the result as JSON. Exit 0 when intact; 1 naming the problem:
edited, recomputed, deleted, reordered, truncated, emptied, forged, head_missing, head_invalid,
head_recreated, key_missing, key_wrong, table_missing, database_missing.
export writes the rows, checkpoints and head to FILE (JSON lines) for an off-device archive.`,
  db: `Usage: outpost db encrypt|decrypt [--manifest PATH] [--data-dir DIR]

Converts the store in the data dir, with Outpost stopped, using the key the manifest resolves
(OUTPOST_DB_KEY_FILE, systemd's credential db-key or spec.storage.encryption.keyFile, with
spec.storage.encryption.enabled: true). encrypt: a plaintext store becomes encrypted; decrypt: an
encrypted store becomes plaintext (then set enabled: false). The original is replaced only by a
checked copy; prints the result as JSON. Exit 0 done or nothing to do, 1 failed, 2 no key.`,
  "wait-ready": `Usage: outpost wait-ready [--manifest PATH] [--timeout SECONDS] [--root DIR --pid PID]

Polls the API's /readyz until it answers 200 (exit 0) or the timeout passes (exit 1, default 30 s).
With --root (the unit's ExecStartPost): the answer must come from the release \`current\` points at (and
from PID, systemd's $MAINPID), and a pending upgrade is confirmed once that instance confirms itself.`,
  resume: `Usage: outpost resume [--root DIR] [--manifest PATH]

Run before every start (the unit's ExecStartPre): resumes an interrupted upgrade. A candidate that has
used up its starts or passed its deadline without confirming is switched back to the previous confirmed
release; otherwise this start counts as one more attempt.`,
  service: `Usage: outpost service start|stop|status [--root DIR] [--ready-url URL] [--ready-timeout S]

Runs Outpost without systemd: start resumes the upgrade state machine, starts <root>/current/outpost in
its own session (output in <root>/logs/<version>.log, PID with start time in <root>/outpost.pid), gates
on /readyz and retries (bounded) as systemd would; stop stops the recorded process.`,
  upgrade:
    `Usage: outpost upgrade <new binary> [--root DIR] [--service UNIT] [--ready-url URL] [--ready-timeout S] [--keep N]

  --root DIR         Install root holding releases/ and current (default /opt/outpost)
  --service UNIT     systemd unit to restart; without it the process in <root>/outpost.pid is replaced
  --ready-url URL    Health gate (default: /readyz of the manifest's spec.api.listen)
  --ready-timeout S  Seconds the new release has to become ready (default 60)
  --keep N           Releases kept (default 3; the current and previous are always kept)
  --allow-unsigned   Install a release without signatures; only when the policy trusts no key

The binary needs <binary>.sha256 and <binary>.release.json beside it (deno task compile writes both),
and <binary>.sig and <binary>.release.json.sig by a key in the installed policy's
spec.release.trustedKeys (outpost sign, or deno task compile --sign-key). Unsigned or wrongly signed
releases are refused before anything changes.`,
  rollback: `Usage: outpost rollback [--root DIR] [--service UNIT] [--ready-url URL] [--ready-timeout S] [--keep N]

  --root DIR         Install root holding releases/ and current (default /opt/outpost)
  --service UNIT     systemd unit to restart; without it the process in <root>/outpost.pid is replaced
  --ready-url URL    Health gate (default: /readyz of the manifest's spec.api.listen)
  --ready-timeout S  Seconds the new release has to become ready (default 60)
  --keep N           Releases kept (default 3; the current and previous are always kept)`,
  version: `Usage: outpost version [--manifest PATH]

Prints the Outpost version, the release version, the Deno version, the schema version and the
release's signature (verified against the manifest's spec.release.trustedKeys).`,
  sign: `Usage: outpost sign --key PRIVATE_KEY [--kind binary|release|policy|model] FILE...

Writes FILE.sig for each FILE: an Ed25519 signature (WebCrypto) over the file's SHA-256, its kind
and its name. The kind defaults from the name: *.release.json release, *.yaml policy, *.onnx or
*.model.json model, anything else binary. PRIVATE_KEY is PKCS#8, PEM or DER:
  openssl genpkey -algorithm ed25519 -out outpost-signing.pem   (or: outpost keygen --out FILE)
The public key for spec.release.trustedKeys: base64 of the raw key (printed by keygen) or
  openssl pkey -in outpost-signing.pem -pubout -outform DER | base64 -w0`,
  tokens: `Usage: outpost tokens list [--manifest PATH] [--data-dir DIR]
       outpost tokens issue --devices ID[,ID...] [--label TEXT] [--manifest PATH] [--data-dir DIR]
       outpost tokens rotate ID [--grace-seconds N] [--manifest PATH] [--data-dir DIR]
       outpost tokens revoke ID [--manifest PATH] [--data-dir DIR]

Ingest tokens (spec.api.ingestAuth: token): each may write only the devices it names (ids, or
prefixes ending in *). issue and rotate print the token once; only its hash is kept, in
<dataDir>/ingest-tokens.json. A running service picks changes up within a second. rotate keeps the
old secret valid for --grace-seconds (default 3600) so senders can move over.`,
  keygen: `Usage: outpost keygen --out PRIVATE_KEY

Creates an Ed25519 key pair, writes the private key (PKCS#8 PEM, mode 0600) to PRIVATE_KEY and prints
the entry for spec.release.trustedKeys. Keep the private key off devices.`,
} as const;

/** Parses `Deno.args` (or the given list) into one command. */
export function parseCommand(args: readonly string[] = Deno.args): Command {
  const [first, ...rest] = args;
  const name = first === undefined || first.startsWith("-") ? "run" : first;
  const tail = name === first ? rest : [...args];
  if (first === "help" || (name === "run" && first !== "run" && (first === "--help" || first === "-h"))) {
    return { name: "help", text: USAGE.main };
  }
  if (!(name in USAGE) || name === "main") throw new UsageError(`Unknown command: ${name}`, USAGE.main);
  const usage = USAGE[name as keyof typeof USAGE];
  if (name === "upgrade" || name === "rollback" || name === "resume") return parseRelease(name, tail, usage);
  if (name === "sign" || name === "keygen") return parseSigning(name, tail, usage);
  if (name === "tokens") return parseTokens(tail, usage);
  if (name === "service") {
    const action = tail[0];
    if (action === "--help" || action === "-h") return { name: "help", text: usage };
    if (action !== "start" && action !== "stop" && action !== "status") {
      throw new UsageError(`Unknown service action: ${action ?? "(none)"}`, usage);
    }
    const parsed = parseRelease("service", tail.slice(1), usage);
    if (parsed.name === "help") return parsed;
    return { name: "service", action, release: (parsed as { release: ReleaseArgs }).release };
  }
  let options = tail;
  const subcommands = { audit: ["verify", "export"], policy: ["show"], db: ["encrypt", "decrypt"] }[name as string];
  if (subcommands) {
    if (!subcommands.includes(tail[0]) && !tail.includes("--help") && !tail.includes("-h")) {
      throw new UsageError(`Unknown ${name} subcommand: ${tail[0] ?? "(none)"}`, usage);
    }
    options = subcommands.includes(tail[0]) ? tail.slice(1) : tail;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: options,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h" },
        manifest: { type: "string" },
        "data-dir": { type: "string" },
        file: { type: "string" },
        out: { type: "string" },
        "unsafe-broad-permissions": { type: "boolean" },
        timeout: { type: "string" },
        deployment: { type: "boolean" },
        root: { type: "string" },
        service: { type: "string" },
        pid: { type: "string" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  const values = parsed.values;
  if (values.help) return { name: "help", text: usage };
  const manifest = values.manifest ?? DEFAULT_MANIFEST;
  const dataDir = values["data-dir"];
  if (name === "version") {
    if (Object.keys(values).some((key) => key !== "manifest")) {
      throw new UsageError("version takes only --manifest", usage);
    }
    return { name: "version", manifest };
  }
  if (name === "audit" && tail[0] === "export") {
    if (!values.out) throw new UsageError("audit export needs --out FILE", usage);
    return { name: "audit-export", manifest, dataDir, out: values.out };
  }
  if (name === "audit") return { name: "audit-verify", manifest, dataDir, file: values.file };
  if (name === "policy") return { name: "policy-show", manifest };
  if (name === "db") {
    if (Object.keys(values).some((key) => key !== "manifest" && key !== "data-dir")) {
      throw new UsageError("db takes only --manifest and --data-dir", usage);
    }
    return { name: "db", action: tail[0] as "encrypt" | "decrypt", manifest, dataDir };
  }
  if (name === "wait-ready") {
    const timeoutSeconds = Number(values.timeout ?? 30);
    if (!(timeoutSeconds > 0)) throw new UsageError("--timeout must be a positive number of seconds", usage);
    const pid = values.pid === undefined ? undefined : Number(values.pid);
    if (pid !== undefined && !(Number.isInteger(pid) && pid > 0)) throw new UsageError("--pid must be a PID", usage);
    return { name: "wait-ready", manifest, timeoutSeconds, root: values.root, pid };
  }
  if (name === "check") {
    if (values["unsafe-broad-permissions"]) throw new UsageError("check takes no --unsafe-broad-permissions", usage);
    return {
      name: "check",
      manifest,
      dataDir,
      deployment: values.deployment ?? false,
      root: values.root ?? "/opt/outpost",
      service: values.service ?? "outpost.service",
    };
  }
  return { name: "run", manifest, dataDir, unsafeBroadPermissions: values["unsafe-broad-permissions"] ?? false };
}

function parseRelease(name: "upgrade" | "rollback" | "resume" | "service", args: string[], usage: string): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: name === "upgrade",
      options: {
        help: { type: "boolean", short: "h" },
        manifest: { type: "string" },
        root: { type: "string" },
        service: { type: "string" },
        "ready-url": { type: "string" },
        "ready-timeout": { type: "string" },
        keep: { type: "string" },
        "allow-unsigned": { type: "boolean" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  const values = parsed.values;
  if (values.help) return { name: "help", text: usage };
  const readyTimeoutSeconds = Number(values["ready-timeout"] ?? 60);
  const keep = Number(values.keep ?? 3);
  if (!(readyTimeoutSeconds > 0)) throw new UsageError("--ready-timeout must be a positive number", usage);
  if (!Number.isInteger(keep) || keep < 2) throw new UsageError("--keep must be an integer of at least 2", usage);
  const release: ReleaseArgs = {
    manifest: values.manifest ?? DEFAULT_MANIFEST,
    root: values.root ?? "/opt/outpost",
    service: values.service,
    readyUrl: values["ready-url"],
    readyTimeoutSeconds,
    keep,
    allowUnsigned: values["allow-unsigned"] ?? false,
  };
  if (name !== "upgrade" && release.allowUnsigned) throw new UsageError(`${name} takes no --allow-unsigned`, usage);
  if (name === "rollback" || name === "resume" || name === "service") {
    if (parsed.positionals.length > 0) throw new UsageError(`${name} takes no positional arguments`, usage);
    return name === "service" ? { name, action: "start", release } : { name, release };
  }
  if (parsed.positionals.length !== 1) throw new UsageError("upgrade takes exactly one binary", usage);
  return { name, binary: parsed.positionals[0], release };
}

function parseSigning(name: "sign" | "keygen", args: string[], usage: string): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: name === "sign",
      options: {
        help: { type: "boolean", short: "h" },
        key: { type: "string" },
        kind: { type: "string" },
        out: { type: "string" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  const values = parsed.values;
  if (values.help) return { name: "help", text: usage };
  if (name === "keygen") {
    if (!values.out || values.key || values.kind) throw new UsageError("keygen takes only --out FILE", usage);
    return { name, out: values.out };
  }
  if (!values.key) throw new UsageError("sign needs --key PRIVATE_KEY", usage);
  if (values.out) throw new UsageError("sign takes no --out", usage);
  if (parsed.positionals.length === 0) throw new UsageError("sign needs at least one file", usage);
  const kind = values.kind;
  if (kind !== undefined && kind !== "binary" && kind !== "release" && kind !== "policy" && kind !== "model") {
    throw new UsageError(`--kind must be binary, release, policy or model, not ${kind}`, usage);
  }
  return { name, key: values.key, files: parsed.positionals, kind };
}

function parseTokens(args: string[], usage: string): Command {
  const [action, ...rest] = args;
  if (action === "--help" || action === "-h") return { name: "help", text: usage };
  if (action !== "list" && action !== "issue" && action !== "rotate" && action !== "revoke") {
    throw new UsageError(`Unknown tokens subcommand: ${action ?? "(none)"}`, usage);
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: action === "rotate" || action === "revoke",
      options: {
        help: { type: "boolean", short: "h" },
        manifest: { type: "string" },
        "data-dir": { type: "string" },
        devices: { type: "string" },
        label: { type: "string" },
        "grace-seconds": { type: "string" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  const values = parsed.values;
  if (values.help) return { name: "help", text: usage };
  const common = {
    name: "tokens" as const,
    manifest: values.manifest ?? DEFAULT_MANIFEST,
    dataDir: values["data-dir"],
  };
  const only = (allowed: string[]) => {
    const extra = Object.keys(values).filter((key) => !["manifest", "data-dir", ...allowed].includes(key));
    if (extra.length > 0) throw new UsageError(`tokens ${action} takes no --${extra[0]}`, usage);
  };
  if (action === "list") {
    only([]);
    return { ...common, request: { action } };
  }
  if (action === "issue") {
    only(["devices", "label"]);
    const devices = (values.devices ?? "").split(",").map((device) => device.trim()).filter((d) => d !== "");
    if (devices.length === 0) throw new UsageError("tokens issue needs --devices ID[,ID...]", usage);
    return { ...common, request: { action, devices, ...(values.label === undefined ? {} : { label: values.label }) } };
  }
  if (parsed.positionals.length !== 1) throw new UsageError(`tokens ${action} takes exactly one token id`, usage);
  const id = parsed.positionals[0];
  if (action === "revoke") {
    only([]);
    return { ...common, request: { action, id } };
  }
  only(["grace-seconds"]);
  const graceSeconds = Number(values["grace-seconds"] ?? 3600);
  if (!Number.isInteger(graceSeconds) || graceSeconds < 0) {
    throw new UsageError("--grace-seconds must be a whole number of seconds", usage);
  }
  return { ...common, request: { action, id, graceSeconds } };
}
