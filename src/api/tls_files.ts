/**
 * The API's certificate and key (`spec.api.tls`), read at start and re-read when either file
 * changes, so a renewed certificate is served without a restart. A pair that does not load (a
 * key that does not match, half-written files) is not used: the current pair stays and the
 * failure is logged and counted until a good pair appears.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface TlsPair {
  readonly cert: string;
  readonly key: string;
  /** SHA-256 fingerprint of the leaf certificate, `AB:CD:...` as node:crypto prints it. */
  readonly fingerprint256: string;
  readonly validTo: string;
}

/** Reloaded files are checked this often. */
export const TLS_RELOAD_CHECK_MS = 2_000;

/** Reads and checks the pair: the first certificate of `certFile` must match `keyFile`. */
export function readTlsPair(files: TlsFiles): TlsPair {
  const cert = readPem(files.certFile, "spec.api.tls.certFile");
  const key = readPem(files.keyFile, "spec.api.tls.keyFile");
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (error) {
    throw new Error(`spec.api.tls.certFile ${files.certFile} holds no PEM certificate`, { cause: error });
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (error) {
    throw new Error(`spec.api.tls.keyFile ${files.keyFile} holds no PEM private key`, { cause: error });
  }
  if (!matches) {
    throw new Error(`spec.api.tls.keyFile ${files.keyFile} is not the key of the certificate in ${files.certFile}`);
  }
  return { cert, key, fingerprint256: leaf.fingerprint256, validTo: leaf.validTo };
}

/** A change stamp of both files (inode, size, mtime): a renewal by rename or in place both show. */
export function tlsStamp(files: TlsFiles): string {
  return [files.certFile, files.keyFile].map((path) => {
    try {
      const info = Deno.statSync(path);
      return `${info.ino}:${info.size}:${info.mtime?.getTime()}`;
    } catch {
      return "missing";
    }
  }).join("|");
}

/**
 * Calls `apply` with the new pair whenever the files change and load; `onError` when they
 * change but do not. Returns a function that stops watching.
 */
export function watchTlsFiles(
  files: TlsFiles,
  apply: (pair: TlsPair) => void,
  onError: (error: Error) => void,
  intervalMs = TLS_RELOAD_CHECK_MS,
): () => void {
  let stamp = tlsStamp(files);
  const timer = setInterval(() => {
    const now = tlsStamp(files);
    if (now === stamp) return;
    stamp = now;
    let pair: TlsPair;
    try {
      pair = readTlsPair(files);
    } catch (error) {
      onError(error as Error);
      return;
    }
    apply(pair);
  }, intervalMs);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}

function readPem(path: string, key: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    throw new Error(`Cannot read ${key} ${path}: ${(error as Error).message}`, { cause: error });
  }
}
