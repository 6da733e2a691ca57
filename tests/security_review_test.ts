/**
 * Issue 12 parts 4-5 under attack: what an independent review broke, each kept broken-proof here.
 * The real program as a child with its derived flags, or the real code in concurrent processes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { IngestTokens, TOKENS_FILE } from "../src/api/ingest_tokens.ts";
import { PROJECT_ROOT } from "./helpers/outpost_process.ts";

const LIMITS = { ingestTokens: 100_000, devicesPerToken: 10, nameLength: 128 };

Deno.test("two processes changing the ingest tokens at once lose nothing: no issued token dropped, no revoked one back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // What `outpost tokens` and the admin routes run, in two processes at full speed.
    const child = join(dir, "churn.ts");
    const module = pathToFileURL(join(PROJECT_ROOT, "src", "api", "ingest_tokens.ts")).href;
    await Deno.writeTextFile(
      child,
      `import { IngestTokens } from ${JSON.stringify(module)};
const [dataDir, tag] = Deno.args;
const tokens = new IngestTokens(dataDir, ${JSON.stringify(LIMITS)});
const kept = [];
for (let i = 0; i < 150; i++) {
  const issued = tokens.issue({ devices: [tag + "-" + i] });
  if (i % 2 === 1) tokens.revoke(issued.id);
  else kept.push(issued.id);
}
console.log(JSON.stringify(kept));
`,
    );
    const run = (tag: string) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--cached-only",
          "--config",
          join(PROJECT_ROOT, "deno.json"),
          "--allow-read",
          `--allow-write=${dir}`,
          child,
          dir,
          tag,
        ],
        stdin: "null",
      }).output();
    const outputs = await Promise.all([run("a"), run("b")]);
    const kept: string[] = [];
    for (const output of outputs) {
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      kept.push(...JSON.parse(new TextDecoder().decode(output.stdout)));
    }
    const listed = new IngestTokens(dir, LIMITS).list().map((token) => token.id);
    assert.deepEqual(listed.toSorted(), kept.toSorted());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a rotation expiry edited into something that is not a date refuses every token, never keeps the old secret for good", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const tokens = new IngestTokens(dir, LIMITS);
    const old = tokens.issue({ devices: ["pump-7"] }).token;
    const rotated = tokens.rotate(old.slice(4, 16), 60).token;
    const path = join(dir, TOKENS_FILE);
    const file = JSON.parse(await Deno.readTextFile(path));
    const previous = file.tokens[0].secrets.find((secret: { expiresAt: string | null }) => secret.expiresAt !== null);
    previous.expiresAt = "never";
    await Deno.writeTextFile(path, JSON.stringify(file));

    const service = new IngestTokens(dir, LIMITS);
    for (const token of [old, rotated]) {
      assert.deepEqual(service.authenticate(`Bearer ${token}`), { ok: false, reason: "store_unreadable" });
    }
    assert.throws(() => service.list(), /not a valid token file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
