/**
 * The candidate's side of the confirm-or-roll-back state machine. A release confirms itself: once
 * its own readiness has held without a break for `settleMs`, it writes
 * `<dataDir>/release-confirmation.json` ({version, instanceId, pid, confirmedAt}). The data dir is
 * the one place the service may write under systemd's ProtectSystem=strict; whoever resolves the
 * upgrade state next (the upgrade's gate, `wait-ready --root`, `resume`) reads it from there.
 */
import { join } from "node:path";
import type { ReadinessProbe } from "../api/health.ts";
import type { ReleaseIdentity } from "../version.ts";
import { readJson, writeJsonAtomic } from "./layout.ts";

/** How long readiness must hold before a release confirms itself. */
export const CONFIRM_SETTLE_MS = 3_000;

export interface Confirmation {
  version: string;
  instanceId: string;
  pid: number;
  confirmedAt: string;
  settleMs: number;
}

export function confirmationFile(dataDir: string): string {
  return join(dataDir, "release-confirmation.json");
}

export async function readConfirmation(dataDir: string): Promise<Confirmation | null> {
  try {
    return await readJson<Confirmation>(confirmationFile(dataDir));
  } catch {
    return null;
  }
}

/**
 * Polls `readiness` until it has held for `settleMs`, then writes the confirmation once. Settles
 * when written or when `signal` aborts.
 */
export function startConfirmation(
  deps: {
    dataDir: string;
    identity: ReleaseIdentity;
    readiness: ReadinessProbe;
    onWriteFailed?: (error: Error) => void;
  },
  options: { signal: AbortSignal; settleMs?: number },
): { finished: Promise<void> } {
  const settleMs = options.settleMs ?? CONFIRM_SETTLE_MS;
  const finished = (async () => {
    let readySince: number | null = null;
    while (!options.signal.aborted) {
      const ok = (await deps.readiness().catch(() => [{ ok: false }])).every((check) => check.ok);
      readySince = ok ? readySince ?? performance.now() : null;
      if (readySince !== null && performance.now() - readySince >= settleMs) {
        const { version, instanceId, pid } = deps.identity;
        try {
          await writeJsonAtomic(
            confirmationFile(deps.dataDir),
            {
              version,
              instanceId,
              pid,
              confirmedAt: new Date().toISOString(),
              settleMs,
            } satisfies Confirmation,
          );
          return;
        } catch (error) {
          // A full disk or no free descriptor: not confirmed yet, tried again after another settle.
          // Never a rejection nobody awaits until shutdown, which would end the process.
          deps.onWriteFailed?.(error as Error);
          readySince = null;
        }
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 250);
        options.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
    }
  })();
  return { finished };
}
