import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../src/config/config.ts";
import { permissionFlags, runtimeFlags } from "../src/permissions/flags.ts";
import { checkDeployment, serviceNetFlags } from "../src/release/deployment_check.ts";
import { ReleaseLayout } from "../src/release/layout.ts";
import { startTime } from "../src/release/process.ts";
import { PROJECT_ROOT } from "./helpers/outpost_process.ts";

const MANIFEST = join(PROJECT_ROOT, "policies", "outpost.yaml");
const SERVICE = "outpost-deployment-check-test.service";

Deno.test({
  name: "check --deployment: an unreadable install root is reported as permission denied",
  ignore: Deno.uid() === 0, // root ignores file modes
  async fn() {
    const dir = await Deno.makeTempDir();
    const root = join(dir, "root");
    await Deno.mkdir(join(root, "releases"), { recursive: true });
    await Deno.chmod(root, 0o000);
    try {
      const config = await loadConfig(MANIFEST, { dataDir: join(dir, "data") });
      const criteria = await checkDeployment(config, {
        root,
        service: SERVICE,
        derivedFlags: permissionFlags(config, { projectRoot: PROJECT_ROOT }),
      });
      const rollback = criteria.find((each) => each.name === "rollback possible offline")!;
      assert.equal(rollback.pass, false);
      assert.equal(rollback.reason, `permission denied reading ${root}`);
      assert.doesNotMatch(rollback.reason, /no previous release/);
      const egress = await serviceNetFlags(new ReleaseLayout(root), SERVICE, "127.0.0.1");
      assert.equal(egress.reaches, null);
      assert.match(egress.detail, /permission denied reading .*outpost\.pid/);
    } finally {
      await Deno.chmod(root, 0o755);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function sleeper(allowNet: string): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", `--allow-net=${allowNet}`, "-"],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("await new Promise((r) => setTimeout(r, 60_000));\n"));
  await writer.close();
  return child;
}

async function withPidFile(child: Deno.ChildProcess, root: string): Promise<ReleaseLayout> {
  const layout = new ReleaseLayout(root);
  await Deno.mkdir(root, { recursive: true });
  const starttime = await startTime(child.pid);
  assert.ok(starttime);
  await Deno.writeTextFile(layout.pidFile, JSON.stringify({ pid: child.pid, starttime, exe: null, version: "t" }));
  return layout;
}

Deno.test("check --deployment: egress-disabled is checked against the running service's --allow-net", async () => {
  const dir = await Deno.makeTempDir();
  const wide = await sleeper("127.0.0.1:18080,example.com:443");
  const narrow = await sleeper("127.0.0.1:18080,localhost:1883,[::1]:9000,10.0.0.5:8080");
  try {
    const layout = await withPidFile(wide, join(dir, "wide"));
    const flags = await serviceNetFlags(layout, SERVICE, "127.0.0.1");
    assert.deepEqual(flags.reaches, ["example.com:443"]);

    const narrowLayout = await withPidFile(narrow, join(dir, "narrow"));
    // 10.0.0.5 is the configured API listen address, so it is allowed.
    const ok = await serviceNetFlags(narrowLayout, SERVICE, "10.0.0.5");
    assert.deepEqual(ok.reaches, []);
    assert.match(ok.detail, /only loopback/);

    const none = await serviceNetFlags(new ReleaseLayout(join(dir, "empty")), SERVICE, "127.0.0.1");
    assert.equal(none.reaches, null);
    assert.equal(none.detail, "service not running: cannot check its flags");
  } finally {
    for (const child of [wide, narrow]) {
      child.kill("SIGKILL");
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check --deployment under the derived flags passes its own permissions criterion, named and explained", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = await loadConfig(MANIFEST, { dataDir: join(dir, "data") });
    const run = (flags: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--cached-only",
          ...flags,
          join(PROJECT_ROOT, "main.ts"),
          "check",
          "--deployment",
          "--data-dir",
          join(dir, "data"),
          "--root",
          join(dir, "root"),
        ],
        stdin: "null",
        env: { NO_COLOR: "1" },
      }).output().then((output) => new TextDecoder().decode(output.stdout));
    const derived = runtimeFlags(config, { projectRoot: PROJECT_ROOT });
    assert.match(
      await run(derived),
      /^PASS {2}permissions no broader than the policy: this release's Deno permissions match the manifest$/m,
    );
    // One broader grant: the criterion fails and names it (not "[object Object]").
    const broader = derived.map((flag) => flag.startsWith("--allow-write=") ? "--allow-write" : flag);
    assert.match(await run(broader), /^FAIL {2}permissions no broader than the policy: .*--allow-write.*$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
