/** Outpost's release version; the release manifest and `outpost version` print it. */
export const VERSION = "0.1.0";

/**
 * No real clock reads earlier than the day this source was released: a wall clock before it is
 * known to be wrong (a Raspberry Pi without an RTC boots at its last saved time or 1970), and
 * checks against the wall clock are skipped until it is plausible.
 */
export const EARLIEST_PLAUSIBLE_MS = Date.parse("2026-11-23T00:00:00Z");
