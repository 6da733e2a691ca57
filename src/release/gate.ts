/**
 * The health gate that knows who answered. A release passes only when `/readyz` answers 200 with
 * the release's own version and, where the process is known, its PID, and then the same instance
 * (its instance id) confirms itself in the data dir. A started process that exits fails the gate at
 * once; whatever else answers on the port (an older instance, another program) never passes it.
 */
import { loopbackFetch } from "../egress/loopback_fetch.ts";
import { readConfirmation } from "./confirmation.ts";
import { isSameProcess, type PidRecord } from "./process.ts";

export interface GateOptions {
  readyUrl: string;
  /** The API's TLS files when it serves HTTPS: the gate pins its certificate. */
  readyTls?: { readonly certFile: string } | null;
  version: string;
  dataDir: string;
  timeoutMs: number;
  /** The process started for this release (outside systemd). */
  process?: PidRecord;
  /** Under systemd: reads the unit's MainPID. */
  mainPid?: () => Promise<number | null>;
  signal?: AbortSignal;
}

export type GateResult =
  | { ok: true; instanceId: string; pid: number }
  | { ok: false; exited: boolean; reason: string };

interface Answer {
  status?: string;
  version?: string;
  instanceId?: string;
  pid?: number;
}

export async function gate(options: GateOptions): Promise<GateResult> {
  const deadline = Date.now() + options.timeoutMs;
  let last = "no answer";
  while (Date.now() < deadline && !options.signal?.aborted) {
    if (options.process && !(await isSameProcess(options.process))) {
      return { ok: false, exited: true, reason: `process ${options.process.pid} exited before it was ready` };
    }
    const answer = await ask(options.readyUrl, options.readyTls ?? null);
    if (answer.status === 200) {
      const body = answer.body;
      const expectedPid = options.process?.pid ?? await options.mainPid?.() ?? null;
      if (body.version !== options.version) {
        last = `answered by release ${body.version} (pid ${body.pid}), not ${options.version}`;
      } else if (expectedPid !== null && expectedPid > 0 && body.pid !== expectedPid) {
        last = `answered by pid ${body.pid}, not the started pid ${expectedPid}`;
      } else if (typeof body.instanceId !== "string") {
        last = "the answer names no instance";
      } else {
        const confirmation = await readConfirmation(options.dataDir);
        if (confirmation?.instanceId === body.instanceId) {
          return { ok: true, instanceId: body.instanceId, pid: body.pid ?? 0 };
        }
        last = `ready as ${options.version} (instance ${body.instanceId}), waiting for it to confirm itself`;
      }
    } else {
      last = answer.status === 0 ? answer.error : `${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return { ok: false, exited: false, reason: `not confirmed within ${options.timeoutMs} ms: ${last}` };
}

async function ask(
  url: string,
  tls: { readonly certFile: string } | null,
): Promise<{ status: number; body: Answer; error: string }> {
  try {
    // The ready URL is the API's own address (from the manifest, or --ready-url from the operator).
    const { hostname, port } = new URL(url);
    const apiListen = { host: hostname.replace(/^\[|\]$/g, ""), port: Number(port || (tls ? 443 : 80)) };
    const response = await loopbackFetch(url, { timeoutMs: 1_000, apiListen, tls });
    const text = await response.text();
    let body: Answer = {};
    try {
      body = JSON.parse(text);
    } catch { /* not ours */ }
    return { status: response.status, body, error: "" };
  } catch (error) {
    return { status: 0, body: {}, error: (error as Error).message };
  }
}

/** systemd's MainPID of a unit, or null when systemctl cannot tell. */
export function systemdMainPid(unit: string): () => Promise<number | null> {
  return async () => {
    try {
      const output = await new Deno.Command("systemctl", {
        args: ["show", "--property", "MainPID", "--value", unit],
        stdout: "piped",
        stderr: "null",
      }).output();
      const pid = Number(new TextDecoder().decode(output.stdout).trim());
      return Number.isInteger(pid) ? pid : null;
    } catch {
      return null;
    }
  };
}
