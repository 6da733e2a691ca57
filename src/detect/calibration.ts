import type { DetectionConfig } from "../config/config.ts";
import { sha256Hex } from "../sha256.ts";
import type { ModelBundle } from "./model_bundle.ts";
import { PCA_CONTRIBUTIONS, PCA_INPUT, PCA_OUTPUT, pcaToOnnx } from "./onnx_graph.ts";
import { fitPca } from "./pca_model.ts";

export interface CalibrationReading {
  ts: number;
  values: Record<string, number>;
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
