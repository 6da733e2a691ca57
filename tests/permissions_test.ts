import assert from "node:assert/strict";
import { loadConfig } from "../src/config/config.ts";
import { netAllowlist, permissionFlags } from "../src/permissions/flags.ts";
import { PROJECT_ROOT, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

Deno.test("permission flags name only the manifest's addresses, the data dir and the native addons", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir, {
      apiPort: 18080,
      metricsPort: 19090,
      mqttUrl: "mqtt://10.1.2.3:1884",
      egressAllowed: ["collector.example.com:443", "[2001:db8::1]:8443"],
    });
    const config = await loadConfig(manifest);
    assert.deepEqual(netAllowlist(config), [
      "127.0.0.1:18080",
      "127.0.0.1:19090",
      "10.1.2.3:1884",
      "collector.example.com:443",
      "[2001:db8::1]:8443",
    ]);
    const flags = permissionFlags(config, { projectRoot: PROJECT_ROOT });
    assert.ok(!flags.includes("-A") && !flags.includes("--allow-all"));
    for (const flag of flags) assert.ok(flag === "--no-prompt" || flag === "--ignore-env" || flag.includes("="), flag);
    const ffi = flags.find((flag) => flag.startsWith("--allow-ffi="))!;
    const addons = ffi.slice("--allow-ffi=".length).split(",");
    assert.equal(addons.length, 2);
    assert.match(addons[0], /@libsql\/linux-x64-gnu\/index\.node$/);
    assert.match(addons[1], /onnxruntime-node\/bin\/napi-v6\/linux\/x64\/onnxruntime_binding\.node$/);
    assert.equal(flags.find((flag) => flag.startsWith("--allow-write=")), `--allow-write=${config.storage.dataDir}`);
    assert.equal(
      flags.find((flag) => flag.startsWith("--allow-env=")),
      "--allow-env=OUTPOST_ADMIN_TOKEN,OUTPOST_SINK_TOKEN,INVOCATION_ID,LIBSQL_JS_DEV",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const BROAD_VARIANTS: Record<string, (derived: string[]) => string[]> = {
  "-A": () => ["-A"],
  "--allow-all": () => ["--allow-all"],
  "a bare --allow-net": (derived) => derived.map((flag) => flag.startsWith("--allow-net=") ? "--allow-net" : flag),
};

for (const [name, broaden] of Object.entries(BROAD_VARIANTS)) {
  Deno.test(`Outpost refuses to start with ${name} unless --unsafe-broad-permissions`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const manifest = await writeManifest(dir);
      const config = await loadConfig(manifest);
      const broad = broaden(permissionFlags(config, { projectRoot: PROJECT_ROOT }));
      const refused = await startOutpost(manifest, { flags: broad, replaceFlags: true, waitReady: false });
      const code = (await refused.process.status).code;
      await refused.stop();
      assert.equal(code, 3);
      assert.match(refused.log(), /Refusing to start: Deno grants more than the manifest allows/);
      assert.match(refused.log(), /net: every host/);

      const overridden = await startOutpost(manifest, {
        flags: broad,
        replaceFlags: true,
        args: ["--unsafe-broad-permissions"],
      });
      assert.equal(await overridden.stop(), 0);
      assert.match(overridden.log(), /permissions.too_broad_overridden/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("Outpost under its derived flags cannot reach a host outside the manifest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir);
    const config = await loadConfig(manifest);
    const flags = permissionFlags(config, { projectRoot: PROJECT_ROOT });
    const probe = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      probe,
      `try { await Deno.connect({ hostname: "198.51.100.7", port: 443 }); console.log("connected"); }
       catch (error) { console.log(error.name); }`,
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, probe],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(new TextDecoder().decode(output.stdout).trim(), "NotCapable");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
