import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig, parseConfig } from "../src/config/config.ts";
import { ConfigError } from "../src/config/errors.ts";
import { MAIN, PROJECT_ROOT } from "./helpers/outpost_process.ts";

const DEFAULT_MANIFEST = join(PROJECT_ROOT, "policies", "outpost.yaml");

async function runMain(args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", `--allow-read=${PROJECT_ROOT}`, "--ignore-env", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    cwd: PROJECT_ROOT,
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

Deno.test("the default manifest gives the documented defaults", async () => {
  const config = await loadConfig(DEFAULT_MANIFEST);
  assert.deepEqual(config.api.listen, { host: "127.0.0.1", port: 8080 });
  assert.equal(config.storage.dataDir, join(Deno.cwd(), "data"));
  assert.equal(config.mqtt, null);
  assert.deepEqual(config.network.egressAllowed, []);
  assert.equal(config.metrics.port, 8080);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.api.listen));
});

Deno.test("--data-dir overrides spec.storage.dataDir", async () => {
  const config = await loadConfig(DEFAULT_MANIFEST, { dataDir: "/tmp/elsewhere" });
  assert.equal(config.storage.dataDir, "/tmp/elsewhere");
});

Deno.test("a manifest with several problems reports every one with its path", () => {
  const text = `apiVersion: fde/v2
kind: Deployment
metadata: { name: edge }
spec:
  network:
    egressAllowed: ["ok.example.com:443", "10.0.0.1", "http://x", "host:99999"]
  api: { listen: "8080" }
  ingest: { mqtt: { url: "http://broker", topics: ["a/#/b"] } }
  storage: { maxSizeMB: -1, retentionHour: 5 }
`;
  let error: ConfigError | undefined;
  try {
    parseConfig(text, "/etc/outpost.yaml");
  } catch (caught) {
    error = caught as ConfigError;
  }
  assert.ok(error instanceof ConfigError);
  const byPath = Object.fromEntries(error.issues.map((issue) => [issue.path, issue.message]));
  assert.deepEqual(Object.keys(byPath).sort(), [
    "apiVersion",
    "spec.api.listen",
    "spec.ingest.mqtt.topics[0]",
    "spec.ingest.mqtt.url",
    "spec.network.egressAllowed[2]",
    "spec.network.egressAllowed[3]",
    "spec.storage",
    "spec.storage.maxSizeMB",
  ]);
  assert.equal(byPath["spec.network.egressAllowed[2]"], '"http://x" is not host[:port]');
  assert.match(byPath["spec.storage"], /retentionHour/);
  assert.match(error.message, /spec\.network\.egressAllowed\[2\]: "http:\/\/x" is not host\[:port\]/);
});

Deno.test("YAML syntax errors and duplicate keys are reported, not thrown raw", () => {
  assert.throws(() => parseConfig("apiVersion: fde/v1\napiVersion: fde/v1\n", "m.yaml"), ConfigError);
  assert.throws(() => parseConfig("spec: [unclosed\n", "m.yaml"), ConfigError);
});

Deno.test("main.ts check exits 0 on the default manifest and prints the permission flags", async () => {
  const result = await runMain(["check"]);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  assert.equal(report.valid, true);
  assert.ok(report.permissionFlags.some((flag: string) => flag === "--allow-net=127.0.0.1:8080"));
});

Deno.test("main.ts check exits 2 listing every problem of a bad manifest", async () => {
  const dir = await Deno.makeTempDir({ dir: PROJECT_ROOT, prefix: ".test-" });
  try {
    const manifest = join(dir, "bad.yaml");
    await Deno.writeTextFile(
      manifest,
      'apiVersion: fde/v1\nkind: Deployment\nmetadata: { name: "Bad Name" }\nspec: { network: { egressAllowed: ["a b"] } }\n',
    );
    const result = await runMain(["check", "--manifest", manifest]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /metadata\.name: /);
    assert.match(result.stderr, /spec\.network\.egressAllowed\[0\]: "a b" is not host\[:port\]/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts prints help for each command, its version, and refuses unknown options", async () => {
  for (const command of ["run", "check", "version"]) {
    const help = await runMain([command, "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, new RegExp(`Usage: outpost ${command}`));
  }
  const version = await runMain(["version"]);
  assert.equal(version.code, 0);
  assert.match(JSON.parse(version.stdout).outpost, /^\d+\.\d+\.\d+$/);
  const unknown = await runMain(["run", "--bogus"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Unknown option '--bogus'/);
});
