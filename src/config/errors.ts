/** One problem in a manifest, with the path of the offending field. */
export interface ConfigIssue {
  path: string;
  message: string;
}

/** The manifest cannot be used; `issues` lists every problem found, not just the first. */
export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];
  readonly file: string;

  constructor(file: string, issues: ConfigIssue[], options?: ErrorOptions) {
    const lines = issues.map((issue) => `  ${issue.path}: ${issue.message}`);
    super(`Invalid manifest ${file}:\n${lines.join("\n")}`, options);
    this.name = "ConfigError";
    this.file = file;
    this.issues = issues;
  }
}
