import type { DetectionConfig } from "../config/config.ts";
import { sha256Hex } from "../sha256.ts";
import type { ModelBundle } from "./model_bundle.ts";
import { WINDOW } from "./baseline_features.ts";
import { fitBaseline } from "./baseline_fit.ts";
import { BASELINE_INPUTS, BASELINE_OUTPUTS, baselineGraph } from "./baseline_model.ts";

/** Calibrated models are named after their device: `baseline/<device>`. */
export const CALIBRATED_PREFIX = "baseline/";
/** With `calibration.seconds`, a calibration ends at this many readings however little time they span... */
export const MAX_CALIBRATION_READINGS = 5_000;
/** ...and needs at least this many however much time they span. */
export const MIN_CALIBRATION_READINGS = 20;

export interface CalibrationReading {
  ts: number;
  values: Record<string, number>;
}

export interface SensorSelection {
  /** The sensors the model uses, in the first reading's order. */
  sensors: string[];
  /** Present in every reading but beyond the bound. */
  overLimit: string[];
  /** Sensors of the first reading that some later reading lacks. */
  incomplete: string[];
}

/**
 * Picks the sensors a device's model uses from its calibration readings (`values_json` texts,
 * oldest first): those every reading carries (the most frequent), at most `maxSensors`
 * (`spec.limits.sensorsPerDevice`), in the first reading's order. Fitting cost grows with the
 * square of the sensors, so this bound is what keeps a calibration cheap. Readings are parsed one
 * at a time: memory is one reading plus the first reading's sensor names.
 */
export function selectSensors(valuesJson: Iterable<string>, maxSensors: number): SensorSelection {
  let present: Set<string> | null = null;
  let order: string[] = [];
  for (const text of valuesJson) {
    const values = JSON.parse(text) as Record<string, unknown>;
    if (present === null) {
      order = Object.keys(values).filter((sensor) => typeof values[sensor] === "number");
      present = new Set(order);
      continue;
    }
    for (const sensor of present) if (typeof values[sensor] !== "number") present.delete(sensor);
  }
  const complete = order.filter((sensor) => present?.has(sensor));
  return {
    sensors: complete.slice(0, maxSensors),
    overLimit: complete.slice(maxSensors),
    incomplete: order.filter((sensor) => !present?.has(sensor)),
  };
}

/** Calibration readings carrying only `sensors`, in that order (so `calibrate` keeps exactly them). */
export function calibrationReadings(
  rows: readonly { ts: number; valuesJson: string }[],
  sensors: readonly string[],
): CalibrationReading[] {
  return rows.map((row) => {
    const all = JSON.parse(row.valuesJson) as Record<string, number>;
    return { ts: row.ts, values: Object.fromEntries(sensors.map((sensor) => [sensor, all[sensor]])) };
  });
}

/**
 * Fits a device's drift-robust model on its calibration readings (taken as normal) and returns
 * it as a bundle: the shared graph (baseline_graph.ts) with the device's parameters in its
 * model.json. The sensors are those every calibration reading carries, in the first reading's order.
 */
export function calibrate(
  device: string,
  readings: readonly CalibrationReading[],
  config: DetectionConfig,
  version: string,
): ModelBundle {
  const sensors = Object.keys(readings[0].values).filter((sensor) =>
    readings.every((reading) => typeof reading.values[sensor] === "number")
  );
  if (sensors.length === 0) throw new RangeError(`No sensor is present in every calibration reading of ${device}`);
  const started = performance.now();
  const rows = readings.map((reading) => sensors.map((sensor) => reading.values[sensor]));
  const { sensors: _, flatSensors, ...params } = fitBaseline(sensors, rows, readings.map((reading) => reading.ts), {
    sensitivity: config.sensitivity,
    slowLevelTolerance: config.baseline.slowLevelTolerance,
    sensors: config.sensors,
  });
  const onnx = baselineGraph();
  return {
    onnx,
    manifest: {
      name: `${CALIBRATED_PREFIX}${device}`,
      version,
      features: sensors,
      window: WINDOW,
      input: BASELINE_INPUTS.window,
      output: BASELINE_OUTPUTS.score,
      contributions: BASELINE_OUTPUTS.contributions,
      outputMeaning:
        "largest deviation of a sensor's level, spread or rate from the device's adaptive baseline (or of a site limit), in units of the alarm threshold; above 1 is anomalous",
      threshold: 1,
      sha256: sha256Hex(onnx),
      baseline: params,
      provenance: {
        producer: "outpost-calibration",
        device,
        readings: readings.length,
        firstTs: new Date(readings[0].ts).toISOString(),
        lastTs: new Date(readings[readings.length - 1].ts).toISOString(),
        createdAt: new Date().toISOString(),
        sensitivity: config.sensitivity,
        slowSensors: sensors.filter((_, j) => params.roles[j] === "slow"),
        flatSensors,
        fitMs: Math.round((performance.now() - started) * 100) / 100,
      },
    },
  };
}
