import { type DetectionConfig, parseConfig } from "../../src/config/config.ts";

/** Detection's settings in a manifest that sets none of them: the schema's defaults, as Outpost runs them. */
export const DEFAULT_DETECTION: DetectionConfig =
  parseConfig("apiVersion: fde/v1\nkind: Deployment\nmetadata:\n  name: defaults\n", "defaults").detection;
