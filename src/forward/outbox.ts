/** The outbox is the store's (src/store/outbox.ts); this path re-exports it for older imports. */
export * from "../store/outbox.ts";
