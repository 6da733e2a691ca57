/**
 * The frictions a new operator hit in the first hour (issue 13 part 4), each retried the way the
 * operator met it: commands from a checkout, `check` on a manifest with several problems, a dry
 * run of the compile task, Ctrl-C, `wait-ready`, `--help`, a port already in use.
 */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { join } from "node:path";
import {
  MAIN,
  PROJECT_ROOT,
  runOutpostCommand,
  startOutpost,
  waitForReady,
  writeManifest,
} from "./helpers/outpost_process.ts";
import { freePort } from "./helpers/ports.ts";

const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** `deno task <task> <args>` in `cwd` (the checkout unless given), as an operator types it. */
async function task(args: string[], cwd = PROJECT_ROOT) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", ...args],
    cwd,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/** `deno run main.ts <args>` without any permission flag. */
async function bareMain(args: string[], cwd: string) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", MAIN, ...args],
    cwd,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test("deno task outpost runs the checkout's commands under the flags each one needs", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir);
    const check = await task(["outpost", "check", "--manifest", manifest]);
    assert.equal(check.code, 0, check.stderr);
    const report = JSON.parse(check.stdout);
    assert.equal(report.valid, true);
    // The flags check prints are the ones the launcher ran it under, native addons included (it
    // printed "unavailable: Native addon not installed" under them before).
    assert.ok(Array.isArray(report.permissionFlags), JSON.stringify(report.permissionFlags));
    const ffi = report.permissionFlags.find((flag: string) => flag.startsWith("--allow-ffi="));
    assert.match(ffi, /index\.node,.*onnxruntime_binding\.node$/);
    // task start is task outpost with run as the default command: the same launcher.
    const viaStart = await task(["start", "check", "--manifest", manifest]);
    assert.equal(viaStart.code, 0, viaStart.stderr);
    assert.deepEqual(JSON.parse(viaStart.stdout).permissionFlags, report.permissionFlags);

    for (const args of [["policy", "show"], ["tokens", "list"], ["version"]]) {
      const result = await task(["outpost", ...args, "--manifest", manifest]);
      assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
      assert.notEqual(result.stdout.trim(), "", args.join(" "));
    }
    const key = join(dir, "signing.pem");
    const keygen = await task(["outpost", "keygen", "--out", key]);
    assert.equal(keygen.code, 0, keygen.stderr);
    const signed = await task(["outpost", "sign", "--key", key, manifest]);
    assert.equal(signed.code, 0, signed.stderr);
    await Deno.stat(`${manifest}.sig`);
    const help = await task(["outpost", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: outpost <command>/);
    // Release commands act on an installed release: the launcher says where they run from.
    const upgrade = await task(["outpost", "upgrade", join(dir, "outpost")]);
    assert.equal(upgrade.code, 2);
    assert.match(upgrade.stderr, /upgrade runs from an installed release: <root>\/current\/outpost upgrade/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts run without flags names the task to use instead of blaming a valid manifest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const check = await bareMain(["check"], PROJECT_ROOT);
    assert.equal(check.code, 2);
    assert.doesNotMatch(check.stderr, /Invalid manifest/);
    assert.match(
      check.stderr,
      /^Cannot read the manifest .*policies\/outpost\.yaml: Deno grants no read access to it$/m,
    );
    assert.match(check.stderr, /deno task outpost <command>/);
    // A command that fails on a write, not a read: the same advice, not a stack trace.
    const keygen = await bareMain(["keygen", "--out", join(dir, "key.pem")], dir);
    assert.equal(keygen.code, 2);
    assert.match(keygen.stderr, /^Requires write access to ".*key\.pem"\n.*deno task outpost <command>/);
    assert.doesNotMatch(keygen.stderr, /at main|--allow-write flag/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check reports the sink outside the allowlist together with the schema's problems", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = join(dir, "outpost.yaml");
    await Deno.writeTextFile(
      manifest,
      `apiVersion: fde/v1
kind: Deployment
metadata: { name: "Plant 7" }
spec:
  network:
    egressAllowed: ["ok.example.com:443", "http://x", "other.example.com:443"]
  api: { listen: "0.0.0.0:8080", bogus: 1 }
  forwarding:
    batchSize: 0
    http: { url: "https://collector.example.com/ingest" }
  storage: { dataDir: ${JSON.stringify(join(dir, "data"))}, encryption: { enabled: true } }
`,
    );
    const result = await task(["outpost", "check", "--manifest", manifest]);
    assert.equal(result.code, 2, result.stderr);
    const lines = result.stderr.split("\n").filter((line) => line.startsWith("  ")).map((line) => line.trim());
    const paths = lines.map((line) => line.slice(0, line.indexOf(": ")));
    assert.deepEqual(paths.sort(), [
      "metadata.name",
      "spec.api",
      "spec.api.listen",
      "spec.forwarding.batchSize",
      "spec.forwarding.http.url",
      "spec.network.egressAllowed[1]",
      "spec.storage.encryption.enabled",
    ]);
    // Judged on the valid entries: the bad one is left out, the good ones kept.
    assert.ok(
      lines.includes(
        "spec.forwarding.http.url: collector.example.com:443 is not in spec.network.egressAllowed " +
          "(ok.example.com:443, other.example.com:443)",
      ),
      result.stderr,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compile --dry-run builds nothing and leaves nothing in dist/", async () => {
  const checkout = await Deno.makeTempDir();
  try {
    for (const entry of ["main.ts", "src", "models", "policies", "compile", "deno.json", "deno.lock"]) {
      const copied = await new Deno.Command("cp", { args: ["-r", join(PROJECT_ROOT, entry), checkout] }).output();
      assert.ok(copied.success, decode(copied.stderr));
    }
    // The packages as installed in the checkout (the staging installs its own per target).
    await Deno.symlink(join(PROJECT_ROOT, "node_modules"), join(checkout, "node_modules"));
    const args = ["compile", "--dry-run", "--target", "aarch64-unknown-linux-gnu"];
    const dist = join(checkout, "dist");
    const fresh = await task(args, checkout);
    assert.equal(fresh.code, 0, fresh.stderr);
    assert.equal(JSON.parse(fresh.stdout).buildDir, join(dist, "build-aarch64-unknown-linux-gnu"));
    assert.match(fresh.stderr, /Dry run: nothing built, the staging removed/);
    await assert.rejects(Deno.stat(dist), Deno.errors.NotFound);
    // A dist/ that holds earlier builds keeps them; only the dry run's staging goes.
    await Deno.mkdir(dist);
    await Deno.writeTextFile(join(dist, "outpost-earlier"), "an earlier build");
    const again = await task(args, checkout);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual([...Deno.readDirSync(dist)].map((entry) => entry.name), ["outpost-earlier"]);
  } finally {
    await Deno.remove(checkout, { recursive: true });
  }
});

Deno.test("Ctrl-C through deno task start stops Outpost cleanly and exits 0", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir);
    const port = Number((await Deno.readTextFile(manifest)).match(/listen: 127\.0\.0\.1:(\d+)/)![1]);
    // A terminal's Ctrl-C: SIGINT to the whole foreground process group (deno task, the launcher,
    // main.ts), with SIGINT at its default disposition as in an interactive shell.
    const child = new Deno.Command("env", {
      args: ["--default-signal=INT", "setsid", Deno.execPath(), "task", "--quiet", "start", "--manifest", manifest],
      cwd: PROJECT_ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const output = Promise.all([child.stdout, child.stderr].map((stream) => new Response(stream).text()));
    const ready = await waitForReady(`http://127.0.0.1:${port}`, child.status, 30_000).catch((error) => error);
    // setsid made the child (same PID) the leader of its own process group.
    await new Deno.Command("kill", { args: ["-INT", "--", `-${child.pid}`] }).output();
    const status = await child.status;
    const [, log] = await output;
    assert.equal(ready, undefined, `${ready}\n${log}`);
    assert.equal(status.code, 0, log);
    assert.match(log, /"event":"runtime\.stopped"/);
    const leftover = await new Deno.Command("kill", { args: ["-0", "--", `-${child.pid}`], stderr: "null" }).output();
    assert.equal(leftover.success, false, "a process of the group outlived the task");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("wait-ready says when Outpost is ready, and names the URL when it is not", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir);
    const outpost = await startOutpost(manifest);
    try {
      const ready = await runOutpostCommand(manifest, ["wait-ready", "--timeout", "10"]);
      assert.equal(ready.code, 0, ready.stderr);
      assert.match(ready.stdout, new RegExp(`^Ready: ${outpost.url}/readyz answered 200 after \\d+\\.\\d s\\n$`));
    } finally {
      assert.equal(await outpost.stop(), 0);
    }
    const notReady = await runOutpostCommand(manifest, ["wait-ready", "--timeout", "1"]);
    assert.equal(notReady.code, 1);
    assert.match(
      notReady.stderr,
      new RegExp(`^Not ready after 1 s: ${outpost.url}/readyz did not answer: .*Connection refused`, "m"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--help lists commands and options in aligned columns", async () => {
  const main = await bareMain(["--help"], PROJECT_ROOT);
  assert.equal(main.code, 0, main.stderr);
  const commands = main.stdout.split("\n\n").find((block) => block.startsWith("Commands:"))!.split("\n").slice(1);
  assert.ok(commands.length >= 10, main.stdout);
  const texts: [string, string][] = [["--help", main.stdout]];
  for (const line of commands) {
    const name = line.trim().split(/\s+/)[0];
    const help = await bareMain([name, "--help"], PROJECT_ROOT);
    assert.equal(help.code, 0, `${name} --help: ${help.stderr}`);
    texts.push([`${name} --help`, help.stdout]);
  }
  for (const [what, text] of texts) {
    // A block of consecutive "  NAME  text" rows: the text starts in the same column on each.
    for (const block of text.split(/\n(?! {2}-?\w)/)) {
      const starts = block.split("\n").flatMap((line) => {
        const match = /^( {2}\S+(?: \S+)*? {2,})\S/.exec(line);
        return match ? [match[1].length] : [];
      });
      assert.ok(new Set(starts).size <= 1, `${what}: columns at ${starts.join(", ")} in\n${block}`);
    }
  }
});

Deno.test("a port in use names the address and spec.api.listen", async () => {
  const dir = await Deno.makeTempDir();
  const port = await freePort();
  const squatter = createServer();
  await new Promise<void>((resolve) => squatter.listen(port, "127.0.0.1", resolve));
  try {
    const manifest = await writeManifest(dir, { apiPort: port });
    const result = await runOutpostCommand(manifest, ["run"]);
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      new RegExp(
        `^Outpost could not start: Cannot listen on 127\\.0\\.0\\.1:${port} \\(spec\\.api\\.listen\\): address in use$`,
        "m",
      ),
    );
  } finally {
    await new Promise((resolve) => squatter.close(resolve));
    await Deno.remove(dir, { recursive: true });
  }
});
