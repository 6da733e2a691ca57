import assert from "node:assert/strict";
import { loadConfig, OUTPOST_ENV_VARS } from "../src/config/config.ts";
import { join } from "node:path";
import { compilePlan } from "../compile/plan.ts";
import {
  expectedPermissionFlags,
  netAllowlist,
  permissionFlags,
  runtimeFlags,
  V8_FLAGS,
} from "../src/permissions/flags.ts";
import { VERSION } from "../src/version.ts";
import { PROJECT_ROOT, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";

const SELF_CHECK = join(PROJECT_ROOT, "src", "permissions", "self_check.ts");

Deno.test("permission flags name only the manifest's addresses, the data dir and the native addons", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir, {
      apiPort: 18080,
      metricsPort: 19090,
      mqttUrl: "mqtt://10.1.2.3:1884",
      egressAllowed: ["collector.example.com:443", "[2001:db8::1]:8443", "10.1.2.3:1884"],
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
      `--allow-env=${[...OUTPOST_ENV_VARS, "LIBSQL_JS_DEV"].join(",")}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Replaces the derived `--allow-<kind>` flag (or adds one) with `flag`. */
function replacing(kind: string, flag: string): (derived: string[]) => string[] {
  return (derived) => [...derived.filter((f) => f !== `--allow-${kind}` && !f.startsWith(`--allow-${kind}=`)), flag];
}

/** Each broadened grant, and the flag the refusal must name. */
const BROAD_VARIANTS: Record<string, { broaden: (derived: string[]) => string[]; names: RegExp }> = {
  "-A": { broaden: () => ["-A"], names: /--allow-net: every host/ },
  "--allow-all": { broaden: () => ["--allow-all"], names: /--allow-net: every host/ },
  "a bare --allow-net": { broaden: replacing("net", "--allow-net"), names: /--allow-net: every host/ },
  "--allow-write=/": { broaden: replacing("write", "--allow-write=/"), names: /--allow-write: reaches \/,/ },
  "--allow-ffi=/": { broaden: replacing("ffi", "--allow-ffi=/"), names: /--allow-ffi: reaches \/,/ },
  "--allow-run=/bin/sh": {
    broaden: (derived) => [...derived, "--allow-run=/bin/sh"],
    names: /--allow-run: runs \/bin\/sh/,
  },
  "an extra --allow-net host": {
    broaden: (derived) => derived.map((f) => f.startsWith("--allow-net=") ? `${f},10.0.0.9:1883` : f),
    names: /--allow-net: reaches 10\.0\.0\.9:1883/,
  },
  "every loopback port": {
    broaden: (derived) => derived.map((f) => f.startsWith("--allow-net=") ? `${f},127.0.0.1` : f),
    names: /--allow-net: every port on 127\.0\.0\.1/,
  },
  "a bare --allow-read": { broaden: replacing("read", "--allow-read"), names: /--allow-read: every path/ },
  // Deno 2.9.5 reads a bare --allow-env next to a bare --ignore-env as "no variable at all", so the
  // broadened run drops --ignore-env, as a hand-written command line would.
  "a bare --allow-env": {
    broaden: (derived) => replacing("env", "--allow-env")(derived).filter((flag) => flag !== "--ignore-env"),
    names: /--allow-env: every variable/,
  },
  "a bare --allow-sys": { broaden: replacing("sys", "--allow-sys"), names: /--allow-sys: every kind/ },
};

for (const [name, { broaden, names }] of Object.entries(BROAD_VARIANTS)) {
  Deno.test(`Outpost refuses to start with ${name}, naming the flag, unless --unsafe-broad-permissions`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const manifest = await writeManifest(dir);
      const config = await loadConfig(manifest);
      const broad = broaden(runtimeFlags(config, { projectRoot: PROJECT_ROOT }));
      const refused = await startOutpost(manifest, { flags: broad, replaceFlags: true, waitReady: false });
      const code = await Promise.race([
        refused.process.status.then((status) => status.code),
        new Promise<string>((resolve) => setTimeout(() => resolve("still running after 20 s"), 20_000)),
      ]);
      await refused.stop();
      assert.equal(code, 3, refused.log());
      assert.match(refused.log(), /Refusing to start: Deno grants more than the manifest allows/);
      assert.match(refused.log(), names);

      const overridden = await startOutpost(manifest, {
        flags: broad,
        replaceFlags: true,
        args: ["--unsafe-broad-permissions"],
      });
      assert.equal(await overridden.stop(), 0);
      assert.match(overridden.log(), /WARNING: --unsafe-broad-permissions/);
      assert.match(overridden.log(), /permissions.too_broad_overridden/);
      assert.match(overridden.log(), names);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("Outpost starts under its derived flags without a permission warning", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir, {
      metricsPort: await freePort(),
      egressAllowed: ["collector.example.com:443", "127.0.0.2:8443"],
    });
    const outpost = await startOutpost(manifest);
    assert.equal(await outpost.stop(), 0);
    assert.doesNotMatch(outpost.log(), /permissions\.too_broad|WARNING/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the compiled binary's baked-in flags pass the self-check it runs", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir, { egressAllowed: ["collector.example.com:443"] });
    const config = await loadConfig(manifest);
    const installRoot = join(dir, "opt", "outpost");
    const plan = compilePlan(config, "x86_64-unknown-linux-gnu", {
      buildDir: PROJECT_ROOT,
      installRoot,
      outDir: join(dir, "dist"),
    });
    const baked = plan.flags.filter((flag) => flag !== V8_FLAGS);
    const expected = expectedPermissionFlags(config, {
      projectRoot: PROJECT_ROOT,
      executable: join(installRoot, "releases", VERSION, "outpost"),
    });
    assert.deepEqual(expected, baked);
    assert.deepEqual(await selfCheckUnder(baked, expected), []);
    // The same binary started by hand with one more program to run is refused.
    const findings = await selfCheckUnder(
      [...baked.filter((f) => !f.startsWith("--allow-run=")), "--allow-run"],
      expected,
    );
    assert.match(findings.join("\n"), /--allow-run: any program/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs the self-check in a child started with `flags` (`deno run`, not `eval`: eval grants all), against `expected`. */
async function selfCheckUnder(flags: string[], expected: string[]): Promise<string[]> {
  const dir = await Deno.makeTempDir();
  try {
    const script = join(dir, "self_check_probe.ts");
    await Deno.writeTextFile(
      script,
      `import { broaderPermissions, describeBroadening } from ${JSON.stringify(SELF_CHECK)};
console.log(JSON.stringify(broaderPermissions(JSON.parse(Deno.args[0])).map(describeBroadening)));`,
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--cached-only", ...flags, script, JSON.stringify(expected)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    return JSON.parse(new TextDecoder().decode(output.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
