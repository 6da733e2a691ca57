import assert from "node:assert/strict";
import { episodeStatements } from "../src/detect/episodes.ts";

Deno.test("an episode ended by a reading dated before its start ends at its start, not before", () => {
  const episode = { id: 7, startTs: 1_763_805_600_000, peakScore: 3, topSensors: ["a"], readings: 4, model: "m@1" };
  const ended = episodeStatements("end", "pump-1", episode, episode.startTs - 60_000, null);
  assert.equal(ended.alert.ts, episode.startTs);
  const update = ended.statements[0] as { sql: string; args: unknown[] };
  assert.match(update.sql, /UPDATE events SET end_ts/);
  assert.equal(update.args[0], episode.startTs);
  const later = episodeStatements("end", "pump-1", episode, episode.startTs + 5_000, null);
  assert.equal(later.alert.ts, episode.startTs + 5_000);
});
