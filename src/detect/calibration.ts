import type { DetectionConfig } from "../config/config.ts";
import { sha256Hex } from "../sha256.ts";
import type { ModelBundle } from "./model_bundle.ts";
import { PCA_CONTRIBUTIONS, PCA_INPUT, PCA_OUTPUT, pcaToOnnx } from "./onnx_graph.ts";
import { fitPca } from "./pca_model.ts";

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
 * Fits a device's model on its calibration readings (taken as normal) and returns it as a
 * bundle: the sensors are those every calibration reading carries, in the first reading's order.
 */
export function calibrate(
  device: string,
  readings: readonly CalibrationReading[],
  config: DetectionConfig["calibration"],
  version: string,
): ModelBundle {
  const sensors = Object.keys(readings[0].values).filter((sensor) =>
    readings.every((reading) => typeof reading.values[sensor] === "number")
  );
  if (sensors.length === 0) throw new RangeError(`No sensor is present in every calibration reading of ${device}`);
  const started = performance.now();
  const rows = readings.map((reading) => sensors.map((sensor) => reading.values[sensor]));
  const params = fitPca(sensors, rows, config);
  const onnx = pcaToOnnx(params, `PCA T²/Q detector calibrated on device ${device}`);
  return {
    onnx,
    manifest: {
      name: `pca-t2q/${device}`,
      version,
      features: sensors,
      window: config.window,
      input: PCA_INPUT,
      output: PCA_OUTPUT,
      contributions: PCA_CONTRIBUTIONS,
      outputMeaning:
        "max(T²/T²limit, Q/Qlimit) over standardised last values and window standard deviations; above 1 is anomalous",
      threshold: 1,
      sha256: sha256Hex(onnx),
      provenance: {
        producer: "outpost-calibration",
        device,
        readings: readings.length,
        firstTs: new Date(readings[0].ts).toISOString(),
        lastTs: new Date(readings[readings.length - 1].ts).toISOString(),
        createdAt: new Date().toISOString(),
        components: params.invEigen.length,
        t2Limit: params.t2Limit,
        qLimit: params.qLimit,
        options: { ...config },
        fitMs: Math.round((performance.now() - started) * 100) / 100,
      },
    },
  };
}
