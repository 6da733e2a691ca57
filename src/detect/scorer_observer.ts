/** Why a reading was left unscored (the reading's flags say it in words). */
export type UnscoredReason =
  | "sensors_missing"
  | "device_quarantined"
  | "model_deactivated"
  | "model_unavailable"
  | "model_failed"
  | "pass_interrupted";

/** What the scorer reports to metrics; every method is called after the work it reports committed. */
export interface ScorerObserver {
  /** `commitToFlagMs`: for each reading commit this pass covered, from its end to the flags' commit. */
  scored(count: number, commitToFlagMs: number[]): void;
  /** A scoring pass failed as a whole (it is retried). */
  inferenceFailed(error: Error): void;
  episode(change: "start" | "end"): void;
  calibrated(device: string, ms: number): void;
  unscored?(reason: UnscoredReason, count: number): void;
  /** A model was deactivated: `cause` is a ModelRunFailure or `process_died`. */
  modelDeactivated?(cause: string): void;
  quarantined?(work: string): void;
  /** Work was cut down at a bound (`spec.limits.<name>`). */
  limitReached?(key: string): void;
  /**
   * A device's latest scored reading in a pass (once per device per pass): its score, whether
   * the device is in an anomaly episode, and the reading's time (epoch ms).
   */
  deviceScored?(device: string, score: number, anomaly: boolean, readingTs: number): void;
  /** The device is gone (retention removed its readings, or it was reset): drop its series. */
  deviceForgotten?(device: string): void;
}
