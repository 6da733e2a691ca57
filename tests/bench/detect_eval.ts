/**
 * Detection evaluation, the way the independent evaluation runs: each labelled recording (one
 * device, 8 channels at 1 Hz, 12-22 minutes, first 400 readings normal, one fault episode) is
 * replayed through POST /v1/readings into a real Outpost on its default detection settings; the
 * per-reading `anomaly` flags are read back from GET /v1/readings and scored pointwise against the
 * labels (readings after calibration). Seeds differ from those the defaults were tuned on.
 */
import { startOutpost, writeManifest } from "../helpers/outpost_process.ts";
import { fetchReadings, replay } from "../helpers/replay.ts";
import { FAULT_KINDS, simulateRecording } from "../sim/pump_simulator.ts";

interface Counts {
  tp: number;
  fp: number;
  fn: number;
  tn: number;
}

const f1 = (c: Counts) => (2 * c.tp) / Math.max(1, 2 * c.tp + c.fp + c.fn);
const far = (c: Counts) => c.fp / Math.max(1, c.fp + c.tn);
const mar = (c: Counts) => c.fn / Math.max(1, c.fn + c.tp);

export async function evaluateDetection(options: { recordingsPerFault: number; firstSeed?: number }): Promise<Counts> {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  const total: Counts = { tp: 0, fp: 0, fn: 0, tn: 0 };
  const lines: string[] = [];
  try {
    const recordings = FAULT_KINDS.flatMap((fault, k) =>
      Array.from({ length: options.recordingsPerFault }, (_, i) => {
        const seed = (options.firstSeed ?? 100_000) + k * 1000 + i;
        return { device: `${fault}-${i}`, recording: simulateRecording({ seed, fault }) };
      })
    );
    await Promise.all(recordings.map(({ device, recording }) => replay(outpost.url, device, recording.readings)));
    for (const fault of FAULT_KINDS) {
      const counts: Counts = { tp: 0, fp: 0, fn: 0, tn: 0 };
      for (const { device, recording } of recordings.filter((r) => r.recording.fault === fault)) {
        let rows = await fetchReadings(outpost.url, device);
        for (let wait = 0; rows.some((r, i) => i >= 400 && r.anomaly === null && !r.flags) && wait < 100; wait++) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          rows = await fetchReadings(outpost.url, device);
        }
        const byTs = new Map(rows.map((row) => [row.tsMs, row.anomaly === true]));
        for (const reading of recording.readings.slice(400)) {
          const flagged = byTs.get(reading.ts) ?? false;
          if (flagged && reading.anomalous) counts.tp++;
          else if (flagged) counts.fp++;
          else if (reading.anomalous) counts.fn++;
          else counts.tn++;
        }
      }
      for (const key of ["tp", "fp", "fn", "tn"] as const) total[key] += counts[key];
      lines.push(
        `  ${fault.padEnd(18)} F1 ${f1(counts).toFixed(3)}  false alarms ${(far(counts) * 100).toFixed(1)}%  missed ${
          (mar(counts) * 100).toFixed(1)
        }%`,
      );
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
  console.log(
    `detection on ${FAULT_KINDS.length * options.recordingsPerFault} simulated recordings: F1 ${
      f1(total).toFixed(3)
    } ` +
      `(target >= 0.80), false alarm rate ${(far(total) * 100).toFixed(1)}% (target <= 15%), missed ${
        (mar(total) * 100).toFixed(1)
      }%`,
  );
  for (const line of lines) console.log(line);
  return total;
}

if (import.meta.main) await evaluateDetection({ recordingsPerFault: Number(Deno.args[0] ?? 10) });
