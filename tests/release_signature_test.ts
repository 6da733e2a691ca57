import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../src/config/config.ts";
import { ConfigError } from "../src/config/errors.ts";
import {
  keyFingerprint,
  readPrivateKey,
  SignatureError,
  signFile,
  verifyFile,
  verifyReleaseSignatures,
} from "../src/release/signature.ts";
import { drill, health, install } from "./helpers/upgrade_drill.ts";
import { buildRelease, newTestKey, type TestKey } from "./helpers/release.ts";
import { MAIN } from "./helpers/outpost_process.ts";

async function refusal(promise: Promise<unknown>): Promise<SignatureError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SignatureError, String(error));
    return error;
  }
  assert.fail("expected a refusal");
}

Deno.test("a signature holds only for its file, kind and name, under a trusted key; two trusted keys rotate", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const [a, b, other] = await Promise.all([newTestKey("key-a"), newTestKey("key-b"), newTestKey("other")]);
    const trusted = [a.trusted, b.trusted];
    const file = join(dir, "outpost-1.0.0");
    await Deno.writeTextFile(file, "binary 1.0.0");
    await signFile(file, a);
    assert.equal((await verifyFile(file, "binary", trusted)).key, "key-a");
    assert.equal((await refusal(verifyFile(file, "binary", [b.trusted]))).reason, "untrusted_key");

    // Rotation: a file signed by the new key verifies under the same list.
    const next = join(dir, "outpost-1.1.0");
    await Deno.writeTextFile(next, "binary 1.1.0");
    await signFile(next, b);
    assert.equal((await verifyFile(next, "binary", trusted)).key, "key-b");

    assert.equal((await refusal(verifyFile(join(dir, "nope"), "binary", trusted))).reason, "unsigned");
    assert.equal((await refusal(verifyFile(file, "release", trusted))).reason, "wrong_kind");
    await signFile(next, other);
    assert.equal((await refusal(verifyFile(next, "binary", trusted))).reason, "untrusted_key");

    // The same bytes under another name: the signature does not move.
    const renamed = join(dir, "outpost-9.9.9");
    await Deno.copyFile(file, renamed);
    await Deno.copyFile(`${file}.sig`, `${renamed}.sig`);
    assert.equal((await refusal(verifyFile(renamed, "binary", trusted))).reason, "wrong_name");

    // Another file's signature, and a tampered file.
    await Deno.copyFile(`${file}.sig`, `${next}.sig`);
    assert.equal((await refusal(verifyFile(next, "binary", trusted, { anyName: true }))).reason, "tampered");
    await Deno.writeTextFile(file, "binary 1.0.0 + backdoor");
    assert.equal((await refusal(verifyFile(file, "binary", trusted))).reason, "tampered");

    // A forged signature that names a trusted key.
    await Deno.writeTextFile(file, "binary 1.0.0");
    const sig = JSON.parse(await Deno.readTextFile(`${file}.sig`));
    const forged = await signFile(file, other);
    await Deno.writeTextFile(`${file}.sig`, JSON.stringify({ ...forged, keyId: sig.keyId }));
    assert.equal((await refusal(verifyFile(file, "binary", trusted))).reason, "invalid");

    // No trusted keys: refused unless unsigned releases are allowed explicitly.
    assert.match(
      (await refusal(verifyReleaseSignatures(file, { trustedKeys: [], allowUnsigned: false }))).message,
      /--allow-unsigned/,
    );
    assert.equal(await verifyReleaseSignatures(file, { trustedKeys: [], allowUnsigned: true }), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("outpost keygen and sign write keys and signatures that verify; openssl keys work; the policy rejects a bad key", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = async (args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--cached-only", "--allow-read", "--allow-write", MAIN, ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      return {
        code: out.code,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
      };
    };
    const keyFile = join(dir, "signing.pem");
    const keygen = await run(["keygen", "--out", keyFile]);
    assert.equal(keygen.code, 0, keygen.stderr);
    assert.equal((await Deno.stat(keyFile)).mode! & 0o777, 0o600);
    const [, id, publicKey] = /\{ id: (\w+), publicKey: (\S+) \}/.exec(keygen.stdout)!;
    assert.equal(id, keyFingerprint(publicKey));

    const binary = join(dir, "outpost-2.0.0-x86_64");
    await Deno.writeTextFile(binary, "binary");
    await Deno.writeTextFile(`${binary}.release.json`, "{}");
    const signed = await run(["sign", "--key", keyFile, binary, `${binary}.release.json`]);
    assert.equal(signed.code, 0, signed.stderr);
    const trusted = [{ id: "build", publicKey }];
    assert.ok(await verifyReleaseSignatures(binary, { trustedKeys: trusted, allowUnsigned: false }));

    // A key made by openssl, its public key as SPKI DER in base64.
    const pem = join(dir, "openssl.pem");
    const gen = await new Deno.Command("openssl", { args: ["genpkey", "-algorithm", "ed25519", "-out", pem] }).output();
    assert.ok(gen.success);
    const spki = await new Deno.Command("openssl", {
      args: ["pkey", "-in", pem, "-pubout", "-outform", "DER"],
      stdout: "piped",
    })
      .output();
    const spkiBase64 = btoa(String.fromCharCode(...spki.stdout));
    await signFile(binary, await readPrivateKey(pem));
    assert.equal((await verifyFile(binary, "binary", [{ id: "ossl", publicKey: spkiBase64 }])).key, "ossl");

    const manifest = join(dir, "outpost.yaml");
    await Deno.writeTextFile(
      manifest,
      `apiVersion: fde/v1\nkind: Deployment\nmetadata:\n  name: t\nspec:\n  release:\n    trustedKeys:\n      - { id: a, publicKey: ${spkiBase64} }\n      - { id: b, publicKey: bm90LWEta2V5 }\n`,
    );
    await assert.rejects(loadConfig(manifest), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /spec\.release\.trustedKeys\[1\]\.publicKey: must be an Ed25519/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("upgrade installs only releases signed by a trusted key: unsigned, other key, another file's signature are refused before anything changes; keys rotate", async () => {
  await drill(async (d) => {
    const [a, b, other] = await Promise.all([newTestKey("key-a"), newTestKey("key-b"), newTestKey("other")]);
    const release = async (version: string, signingKey: TestKey | null, trustedKeys = [a.trusted, b.trusted]) => {
      const manifest = join(d.dir, `${version}.yaml`);
      await Deno.writeTextFile(
        manifest,
        (await Deno.readTextFile(d.manifest)).replace(
          "name: outpost-test",
          `name: site-${version.replaceAll(".", "-")}`,
        ),
      );
      return await buildRelease(d.dir, version, { manifest, root: d.root, signingKey, trustedKeys });
    };
    await install(d, await release("1.0.0", a));
    const before = await health(d.url);
    assert.deepEqual(
      { version: before.version, signature: (before as unknown as { signature: unknown }).signature },
      {
        version: "1.0.0",
        signature: {
          status: "verified",
          key: "key-a",
          keyId: keyFingerprint(a.publicKey),
          sha256: (before as unknown as { signature: { sha256: string } }).signature.sha256,
        },
      },
    );
    const gate = ["--root", d.root, "--ready-url", `${d.url}/readyz`, "--ready-timeout", "30"];

    const unsigned = await d.outpost(["upgrade", await release("1.1.0-unsigned", null), ...gate]);
    assert.equal(unsigned.code, 1);
    assert.match(unsigned.stderr, /no signature/);
    const withFlag = await d.outpost(["upgrade", await release("1.1.0-unsigned", null), ...gate, "--allow-unsigned"]);
    assert.equal(withFlag.code, 1, "--allow-unsigned does not override trusted keys");

    const otherKey = await d.outpost(["upgrade", await release("1.1.0-other", other), ...gate]);
    assert.equal(otherKey.code, 1);
    assert.match(otherKey.stderr, /not in spec\.release\.trustedKeys/);

    const moved = await release("1.1.0-moved", a);
    const donor = await release("1.1.1-donor", a);
    await Deno.copyFile(`${donor}.sig`, `${moved}.sig`);
    const wrongFile = await d.outpost(["upgrade", moved, ...gate]);
    assert.equal(wrongFile.code, 1);
    assert.match(wrongFile.stderr, /the signature covers/);

    assert.equal(await Deno.readLink(join(d.root, "current")), join("releases", "1.0.0"));
    assert.deepEqual([...Deno.readDirSync(join(d.root, "releases"))].map((e) => e.name), ["1.0.0"]);
    assert.equal((await health(d.url)).instanceId, before.instanceId, "the running release was never touched");
    const refused = (await d.history()).filter((entry) => entry.step === "refused");
    assert.equal(refused.length, 4);

    // Rotation: the new release is signed by key B and trusts only B from now on.
    const rotated = await d.outpost(["upgrade", await release("1.1.0", b, [b.trusted]), ...gate]);
    assert.equal(rotated.code, 0, rotated.stderr);
    const after = await health(d.url) as unknown as { version: string; signature: { status: string; key: string } };
    assert.equal(after.version, "1.1.0");
    assert.deepEqual([after.signature.status, after.signature.key], ["verified", "key-b"]);
    const stale = await d.outpost(["upgrade", await release("1.2.0", a), ...gate]);
    assert.equal(stale.code, 1, "key A is no longer trusted");
    assert.match(stale.stderr, /not in spec\.release\.trustedKeys/);

    const version = await d.outpost(["version", "--manifest", join(d.dir, "incoming", "1.1.0", "outpost.yaml")]);
    assert.equal(version.code, 0, version.stderr);
    const printed = JSON.parse(version.stdout);
    assert.equal(printed.release, "1.1.0");
    assert.equal(printed.signature.key, "key-b");
  });
});
