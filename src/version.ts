/** Outpost's release version; the release manifest and `outpost version` print it. */
export const VERSION = "0.1.0";
