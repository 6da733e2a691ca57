/**
 * `deno task bench`: every capability's benchmark, each figure printed next to the limit it is
 * compared against. `--quick` runs each briefly (CI uses it to keep the benchmarks working).
 */
import { parseArgs } from "node:util";
import { benchDetect } from "./detect_bench.ts";
import { benchEncryption } from "./encryption_bench.ts";
import { evaluateDetection } from "./detect_eval.ts";
import { benchForward } from "./forward_bench.ts";
import { benchImportCosts } from "./import_costs.ts";
import { benchIngest } from "./ingest_bench.ts";
import { benchConsole } from "./console_bench.ts";
import { benchMemory } from "./memory_bench.ts";

const { values } = parseArgs({ args: Deno.args, options: { quick: { type: "boolean" } } });
const quick = values.quick ?? false;

console.log(
  `# Outpost benchmarks (${
    quick ? "quick" : "full"
  }), Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores`,
);
console.log("\n## Ingest");
await benchIngest(
  quick
    ? { seconds: 1, mqttMessages: 2_000, rawRows: 20_000, startupRuns: 2 }
    : { seconds: 10, mqttMessages: 50_000, rawRows: 200_000, startupRuns: 7 },
);

console.log("\n## Encryption at rest: ingest with and without, interleaved");
await benchEncryption(
  quick ? { seconds: 1, rawRows: 20_000, rounds: 1 } : { seconds: 5, rawRows: 100_000, rounds: 3 },
);

console.log("\n## Store and forward");
await benchForward({ seconds: quick ? 300 : 3600 });

console.log("\n## Detection");
await evaluateDetection({ quick });
await benchDetect(quick ? { seconds: 1, readings: 2_000 } : { seconds: 10, readings: 50_000 });

console.log("\n## Console: a day of readings for the device chart");
await benchConsole(quick ? { hours: 1, runs: 2 } : { hours: 24, runs: 5 });

console.log("\n## Memory: each situation in a fresh process, against the 128 MB budget");
await benchMemory(
  quick
    ? { realisticSeconds: 5, loadSeconds: 1, mqttMessages: 1_000, calibratedDevices: 10, backlogSeconds: 120 }
    : { realisticSeconds: 600, loadSeconds: 10, mqttMessages: 50_000, calibratedDevices: 1_000, backlogSeconds: 3_600 },
);

console.log("\n## Memory: what each part costs (RSS of a bare process after importing it)");
await benchImportCosts();
