import { eventually } from "./eventually.ts";
import { postJson } from "./outpost_process.ts";

/** What a replay sends of a reading: any simulator's readings have these fields. */
export interface ReplayedReading {
  ts: number;
  values: Record<string, number>;
}

/** Sends readings for one device through POST /v1/readings in batches of 100. */
export async function replay(url: string, device: string, readings: readonly ReplayedReading[]): Promise<void> {
  for (let i = 0; i < readings.length; i += 100) {
    const batch = readings.slice(i, i + 100).map((r) => ({ device, ts: r.ts, values: r.values }));
    const response = await postJson(`${url}/v1/readings`, { readings: batch });
    if (response.status !== 202) throw new Error(`POST /v1/readings: ${response.status} ${await response.text()}`);
    await response.body?.cancel();
  }
}

/**
 * Waits until the device's reading at `ts` is scored (its `/v1/devices` row's latest score is at
 * `ts`; readings being scored in order, so is every earlier one) and returns that row.
 */
export async function scoredThrough(
  url: string,
  device: string,
  ts: number | string,
  timeoutMs = 20_000,
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const iso = new Date(ts).toISOString();
  return await eventually(
    async () => {
      const body = await (await fetch(`${url}/v1/devices`)).json();
      return body.devices.find((row: { device: string }) => row.device === device);
    },
    (row) => row?.latestScore?.ts === iso,
    timeoutMs,
  );
}

export interface ScoredReading {
  ts: string;
  tsMs: number;
  values: Record<string, number>;
  score: number | null;
  anomaly: boolean | null;
  flags?: string;
}

/** Every reading of a device from GET /v1/readings, following the cursor. */
export async function fetchReadings(url: string, device: string, pageSize = 1000): Promise<ScoredReading[]> {
  const all: ScoredReading[] = [];
  let cursor: string | null = null;
  do {
    const query: URLSearchParams = new URLSearchParams({
      device,
      limit: String(pageSize),
      ...(cursor ? { cursor } : {}),
    });
    const page: { readings: ScoredReading[]; nextCursor: string | null } =
      await (await fetch(`${url}/v1/readings?${query}`))
        .json();
    all.push(...page.readings);
    cursor = page.nextCursor;
  } while (cursor);
  return all;
}
