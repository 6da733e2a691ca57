/**
 * Native addons (libsql, onnxruntime) run outside Deno's permission flags. What keeps their reach
 * small: the database is opened at exactly its path, no SQL reachable from input can name another
 * file, and ONNX models are loaded from bytes with external data refused (model_external_data_test.ts).
 */
import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const SRC = join(import.meta.dirname!, "..", "src");

Deno.test("the database opens at exactly the data dir: %2e%2e in its name does not climb out of --allow-write", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await writeManifest(dir);
    const dataDir = join(dir, "data", "%2e%2e");
    const text = await Deno.readTextFile(manifest);
    await Deno.writeTextFile(manifest, text.replace(/dataDir: .*/, `dataDir: ${dataDir}`));
    const outpost = await startOutpost(manifest);
    assert.equal(await outpost.stop(), 0);
    assert.ok((await Deno.stat(join(dataDir, "outpost.db"))).isFile);
    // libsql decodes %XX in a file: URL: `file:${dataDir}/outpost.db` would have opened this one.
    await assert.rejects(Deno.stat(join(dir, "data", "outpost.db")), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("no code in src/ can make libsql touch another file: no ATTACH, VACUUM INTO or extension loading", async () => {
  const found: string[] = [];
  let clients = 0;
  for await (const path of sourceFiles(SRC)) {
    const lines = (await Deno.readTextFile(path)).split("\n");
    lines.forEach((line, index) => {
      const code = line.trim();
      if (code.startsWith("*") || code.startsWith("//") || code.startsWith("/*")) return;
      const where = `${relative(SRC, path)}:${index + 1}: ${code}`;
      // One exception: `db encrypt|decrypt` copies the store to a fixed name beside it, built
      // from the data dir by databaseUrl (offline, under the data dir's lock; no input in the SQL).
      const conversion = relative(SRC, path) === join("store", "database_encryption.ts") &&
        /VACUUM INTO '\$\{`\$\{databaseUrl\(copy\)\}/.test(code);
      if (/\bATTACH\b|\bVACUUM\s+INTO\b|load_extension|loadExtension|\bDETACH\b/i.test(code) && !conversion) {
        found.push(where);
      }
      if (/createClient\(/.test(code)) {
        clients++;
        if (!/createClient\(\{ url: databaseUrl\(/.test(code)) found.push(`${where} (not opened through databaseUrl)`);
      }
    });
  }
  assert.deepEqual(found, []);
  assert.ok(clients > 0, "the scan found the store's createClient calls");
});

async function* sourceFiles(folder: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(folder)) {
    const path = join(folder, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}
