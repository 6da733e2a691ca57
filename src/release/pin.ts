/**
 * What a release runs with, pinned by hash in `releases/<version>/pin.json`: its binary, manifest
 * and shipped models (from the `release.json` it was installed with) and the model assignments of
 * the data dir (scope → model, by its name, version and the SHA-256 of its graph).
 *
 * Rules it always keeps:
 * - A release's assignments are pinned when it confirms, and again when an upgrade or rollback
 *   leaves it (before the next release's first start, with the service stopped): a failed upgrade
 *   or a later rollback returns to what the release last ran with, operator changes included.
 * - Before a release starts after a switch, its pinned assignments are restored in the data dir's
 *   database, with the service stopped, in one transaction; the process reads them when it starts.
 * - Bundles are never copied: they stay in `<dataDir>/models/` (calibrated ones are pruned, see registry.ts). A
 *   pinned model whose bundle is missing or does not match its hash is reported (history.jsonl) and
 *   its scope is left as it is, never silently changed. Scopes the pin does not name are unassigned.
 */
import { join } from "node:path";
import { BundleSealer } from "../detect/bundle_seal.ts";
import { readBundle } from "../detect/model_bundle.ts";
import { type StoreLocation, withDatabaseFile } from "../store/database.ts";
import { modelsWithSha256, restoreAssignments, snapshotAssignments } from "../store/models_table.ts";
import { StoreClock } from "../store/store_clock.ts";
import { readJson, type ReleaseLayout, writeJsonAtomic } from "./layout.ts";

export interface PinnedAssignment {
  scope: string;
  modelSha256: string;
  name: string;
  version: string;
  source: string;
}

export interface ReleasePin {
  version: string;
  /** `confirmed`: when the release confirmed itself; `left`: when an upgrade or rollback left it. */
  pinnedWhen: "confirmed" | "left";
  at: string;
  binarySha256: string | null;
  manifestSha256: string | null;
  shippedModels: { path: string; sha256: string }[];
  /** null: the database could not be read (see `problem`); [] when it has no assignments yet. */
  assignments: PinnedAssignment[] | null;
  problem?: string;
}

export interface RestoreReport {
  version: string;
  restored: { scope: string; modelSha256: string }[];
  unassigned: string[];
  missing: { scope: string; modelSha256: string; reason: string }[];
}

export function pinFile(layout: ReleaseLayout, version: string): string {
  return join(layout.release(version), "pin.json");
}

export async function readPin(layout: ReleaseLayout, version: string): Promise<ReleasePin | null> {
  return await readJson<ReleasePin>(pinFile(layout, version)).catch(() => null);
}

/** Pins `version` as it runs now: release.json's hashes and the data dir's assignments. */
export async function writePin(
  layout: ReleaseLayout,
  version: string,
  options: { store: StoreLocation; when: ReleasePin["pinnedWhen"] },
): Promise<ReleasePin | null> {
  const folder = layout.release(version);
  if (!await Deno.stat(folder).then(() => true, () => false)) return null;
  const release = await readJson<{
    binary?: { sha256?: string };
    manifest?: { sha256?: string };
    models?: { path: string; sha256: string }[];
  }>(join(folder, "release.json")).catch(() => null);
  let assignments: PinnedAssignment[] | null = null;
  let problem: string | undefined;
  try {
    assignments = (await withDatabaseFile(options.store, snapshotAssignments)).map((each) => ({
      scope: each.scope,
      modelSha256: each.sha256,
      name: each.name,
      version: each.version,
      source: each.source,
    }));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) assignments = [];
    else problem = `cannot read the assignments: ${(error as Error).message}`;
  }
  const pin: ReleasePin = {
    version,
    pinnedWhen: options.when,
    at: new Date().toISOString(),
    binarySha256: release?.binary?.sha256 ?? null,
    manifestSha256: release?.manifest?.sha256 ?? null,
    shippedModels: release?.models ?? [],
    assignments,
    ...(problem ? { problem } : {}),
  };
  await writeJsonAtomic(pinFile(layout, version), pin);
  await layout.record("pinned", {
    version,
    when: options.when,
    assignments: assignments?.map((each) => `${each.scope}=${each.modelSha256.slice(0, 12)}`) ?? null,
    ...(problem ? { problem } : {}),
  });
  return pin;
}

/**
 * Restores `version`'s pinned assignments in the data dir's database; the service must be stopped.
 * Null when the release has no pin with assignments (recorded; nothing changes).
 */
export async function restorePin(
  layout: ReleaseLayout,
  version: string,
  options: { store: StoreLocation },
): Promise<RestoreReport | null> {
  const pin = await readPin(layout, version);
  if (pin?.assignments == null) {
    await layout.record("assignments_not_restored", {
      version,
      reason: pin === null ? "the release has no pin" : pin.problem ?? "the pin has no assignments",
    });
    return null;
  }
  const pinned = pin.assignments;
  const report: RestoreReport = { version, restored: [], unassigned: [], missing: [] };
  try {
    // Bundles are sealed with the store's key when it is encrypted (src/detect/bundle_seal.ts).
    const sealer = await BundleSealer.forStore(options.store.encryptionKey);
    await withDatabaseFile(options.store, async (client) => {
      const current = new Map((await snapshotAssignments(client)).map((each) => [each.scope, each]));
      const assign: { scope: string; modelId: number }[] = [];
      for (const { scope, modelSha256, name, version } of pinned) {
        // The hash is of the graph alone: every calibrated model shares one graph, so the name and
        // version (a calibrated model's name is its device's) say which parameters were pinned.
        const candidates = (await modelsWithSha256(client, modelSha256)).filter((model) =>
          model.name === name && model.version === version
        );
        const found = await usableModel(candidates, { sha256: modelSha256, name, version }, sealer);
        if ("reason" in found) {
          report.missing.push({ scope, modelSha256, reason: found.reason });
          continue;
        }
        if (current.get(scope)?.modelId !== found.id) assign.push({ scope, modelId: found.id });
        report.restored.push({ scope, modelSha256 });
      }
      const named = new Set(pinned.map((each) => each.scope));
      report.unassigned = [...current.keys()].filter((scope) => !named.has(scope));
      const reason = `release ${version} restored its pinned models`;
      const now = (await StoreClock.open(client)).now();
      await restoreAssignments(client, { assign, unassign: report.unassigned, reason }, now);
    });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      await layout.record("assignments_not_restored", { version, reason: (error as Error).message });
      throw error;
    }
    // No database yet: nothing to restore.
  }
  await layout.record("assignments_restored", {
    version,
    restored: report.restored.map((each) => `${each.scope}=${each.modelSha256.slice(0, 12)}`),
    unassigned: report.unassigned,
  });
  for (const missing of report.missing) await layout.record("pinned_model_missing", { version, ...missing });
  return report;
}

/** The newest stored model with this hash whose bundle is on disk and still matches it. */
async function usableModel(
  candidates: { id: number; path: string }[],
  pinned: { sha256: string; name: string; version: string },
  sealer: BundleSealer | null,
): Promise<{ id: number } | { reason: string }> {
  if (candidates.length === 0) return { reason: `no stored model ${pinned.name} ${pinned.version} has this hash` };
  const problems: string[] = [];
  for (const candidate of candidates) {
    try {
      const { manifest } = await readBundle(candidate.path, sealer);
      if (manifest.sha256 === pinned.sha256 && manifest.name === pinned.name && manifest.version === pinned.version) {
        return { id: candidate.id };
      }
      problems.push(`${candidate.path}: holds ${manifest.name} ${manifest.version} ${manifest.sha256}`);
    } catch (error) {
      problems.push(`${candidate.path}: ${(error as Error).message}`);
    }
  }
  return { reason: `bundle missing or changed: ${problems.join("; ")}` };
}
