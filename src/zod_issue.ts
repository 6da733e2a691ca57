/** A zod issue path as an operator reads it: `readings[3].values.temp`, `spec.api.listen`. */
export function formatIssuePath(path: readonly PropertyKey[], root: string): string {
  let text = "";
  for (const key of path) {
    text += typeof key === "number" ? `[${key}]` : text === "" ? String(key) : `.${String(key)}`;
  }
  return text === "" ? root : text;
}
