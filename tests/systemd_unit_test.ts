import assert from "node:assert/strict";
import { join } from "node:path";
import { PROJECT_ROOT } from "./helpers/outpost_process.ts";

const HAS_SYSTEMD_ANALYZE = await new Deno.Command("sh", { args: ["-c", "command -v systemd-analyze"], stdout: "null" })
  .output().then((output) => output.success, () => false);

async function run(command: string, args: string[], cwd = PROJECT_ROOT) {
  const output = await new Deno.Command(command, {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  })
    .output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

Deno.test({
  name: "the rendered unit passes systemd-analyze verify with no output and scores an exposure of at most 2.0",
  ignore: !HAS_SYSTEMD_ANALYZE,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const manifest = join(dir, "site.yaml");
      await Deno.writeTextFile(
        manifest,
        (await Deno.readTextFile(join(PROJECT_ROOT, "policies", "device.yaml")))
          .replace("egressAllowed: []", 'egressAllowed: ["10.20.30.40:443", "collector.invalid:443"]'),
      );
      const installRoot = join(dir, "opt");
      for (const link of ["current", "last-good"]) {
        await Deno.mkdir(join(installRoot, link), { recursive: true });
        await Deno.writeTextFile(join(installRoot, link, "outpost"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      }
      const rendered = await run(Deno.execPath(), [
        "task",
        "--quiet",
        "systemd-unit",
        "--manifest",
        manifest,
        "--install-root",
        installRoot,
      ]);
      assert.equal(rendered.code, 0, rendered.stderr);
      assert.match(rendered.stderr, /collector\.invalid did not resolve/);
      const unit = rendered.stdout;
      for (
        const line of [
          "DynamicUser=yes",
          "StateDirectory=outpost",
          "ProtectSystem=strict",
          "NoNewPrivileges=yes",
          "PrivateTmp=yes",
          "IPAddressDeny=any",
          "IPAddressAllow=localhost 10.20.30.40",
          "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
          "MemoryMax=128M",
          "CPUQuota=50%",
          "Restart=on-failure",
          "TimeoutStopSec=20s",
          `ExecStartPre=+${installRoot}/last-good/outpost resume --root ${installRoot}`,
          `ExecStartPost=+${installRoot}/current/outpost wait-ready --timeout 30 --root ${installRoot} --pid $MAINPID`,
        ]
      ) assert.ok(unit.split("\n").includes(line), `missing ${line}`);
      assert.match(unit, /NOT RESOLVED at render time, so blocked by the OS: collector\.invalid/);
      const path = join(dir, "outpost.service");
      await Deno.writeTextFile(path, unit);
      const verify = await run("systemd-analyze", ["verify", path], dir);
      assert.equal(verify.code, 0, verify.stderr);
      assert.equal(verify.stderr.trim(), "", "verify warns on stderr only");
      const security = await run("systemd-analyze", ["security", "--offline=true", path], dir);
      const exposure = Number(/Overall exposure level for outpost\.service: ([\d.]+)/.exec(security.stdout)?.[1]);
      assert.ok(exposure <= 2.0, `exposure ${exposure}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
