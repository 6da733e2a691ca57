/** Why a reading was left unscored (besides missing sensors, which is a flag of the reading). */
export type UnscoredReason =
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
}
