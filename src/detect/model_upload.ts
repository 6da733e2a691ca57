/**
 * `POST /v1/models` bodies: `{"manifest":{...},"onnx":"<base64>","device"?:"...","signature"?:...}`, read and
 * decoded within a fixed budget. The body is read as bytes up to `spec.limits.modelUploadBytes`
 * (refused from its Content-Length before reading, and again as soon as more has arrived); the
 * envelope is scanned in place, so the base64 text never becomes a JS string, and decoded
 * straight into the model's bytes. Only the small fields (`manifest`, `device`, `signature`) go through
 * JSON.parse. V8 heap use is therefore independent of the model's size.
 */
import { z } from "zod";
import { readBoundedBody } from "../api/bounded_body.ts";
import { limitKey } from "../limit_exceeded_error.ts";

/** A body that is not a model upload (not JSON of the expected shape, not base64). */
export class ModelUploadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelUploadError";
  }
}

/** Another model upload is being checked; uploads run one at a time. */
export class UploadInProgressError extends Error {
  /** When the client may try again. */
  readonly retryAfterSeconds = 5;
  constructor() {
    super("Another model upload is being checked: retry when it has finished");
    this.name = "UploadInProgressError";
  }
}

export interface ModelUpload {
  manifest: Record<string, unknown>;
  onnx: Uint8Array;
  device?: string;
  /** The `.sig` of the model as `model.onnx` (src/detect/model_signature.ts): its text or its object. */
  signature?: string | Record<string, unknown>;
}

/** Bytes of JSON around the model (`manifest`, `device`) at most. */
const SMALL_FIELD_BYTES = 256 * 1024;

/** Reads and decodes an upload; throws LimitExceededError (413) or ModelUploadError. */
export async function readModelUpload(
  request: Request,
  limits: { modelUploadBytes: number; nameLength: number },
): Promise<ModelUpload> {
  const body = await readBoundedBody(request, limits.modelUploadBytes, limitKey("modelUploadBytes"));
  const fields = scanEnvelope(body);
  const schema = z.object({
    manifest: z.record(z.string(), z.unknown()),
    device: z.string().min(1).max(limits.nameLength).optional(),
    signature: z.union([z.string().min(1), z.record(z.string(), z.unknown())]).optional(),
  }).strict();
  const parsed = schema.safeParse(fields.small);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ModelUploadError(`${issue.path.join(".") || "(body)"}: ${issue.message}`);
  }
  if (!fields.onnx) throw new ModelUploadError("onnx: a base64 string is required");
  return { ...parsed.data, onnx: decodeBase64(body, fields.onnx) };
}

interface Span {
  start: number;
  end: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** The top-level object: `onnx` as the span of its string's content, every other field parsed. */
function scanEnvelope(body: Uint8Array): { small: Record<string, unknown>; onnx: Span | null } {
  const small: Record<string, unknown> = {};
  let onnx: Span | null = null;
  let smallBytes = 0;
  let at = skipSpace(body, 0);
  if (body[at] !== 0x7b) throw new ModelUploadError('Expected {"manifest":{...},"onnx":"<base64>","device"?}');
  at = skipSpace(body, at + 1);
  if (body[at] === 0x7d) at = skipSpace(body, at + 1);
  else {
    while (true) {
      if (body[at] !== QUOTE) throw new ModelUploadError(`Expected a field name at byte ${at}`);
      const keyEnd = stringEnd(body, at);
      const key = parseJson(body, at, keyEnd) as string;
      at = skipSpace(body, keyEnd);
      if (body[at] !== 0x3a) throw new ModelUploadError(`Expected ":" at byte ${at}`);
      at = skipSpace(body, at + 1);
      const valueEnd = body[at] === QUOTE ? stringEnd(body, at) : valueEndOf(body, at);
      if (key === "onnx") {
        if (body[at] !== QUOTE) throw new ModelUploadError("onnx: a base64 string is required");
        onnx = { start: at + 1, end: valueEnd - 1 };
      } else {
        smallBytes += valueEnd - at;
        if (smallBytes > SMALL_FIELD_BYTES) {
          throw new ModelUploadError(`The fields besides onnx are larger than ${SMALL_FIELD_BYTES} bytes`);
        }
        if (Object.hasOwn(small, key)) throw new ModelUploadError(`${key}: given twice`);
        small[key] = parseJson(body, at, valueEnd);
      }
      at = skipSpace(body, valueEnd);
      if (body[at] === 0x2c) {
        at = skipSpace(body, at + 1);
        continue;
      }
      if (body[at] !== 0x7d) throw new ModelUploadError(`Expected "," or "}" at byte ${at}`);
      at = skipSpace(body, at + 1);
      break;
    }
  }
  if (at !== body.length) throw new ModelUploadError(`Unexpected data after the object at byte ${at}`);
  return { small, onnx };
}

function skipSpace(body: Uint8Array, at: number): number {
  while (at < body.length && (body[at] === 0x20 || body[at] === 0x0a || body[at] === 0x0d || body[at] === 0x09)) at++;
  return at;
}

/** The index after the closing quote of the string that opens at `at`. */
function stringEnd(body: Uint8Array, at: number): number {
  for (let i = at + 1; i < body.length; i++) {
    if (body[i] === BACKSLASH) i++;
    else if (body[i] === QUOTE) return i + 1;
  }
  throw new ModelUploadError("A string is not closed");
}

/** The end of a non-string JSON value (object, array, number, literal) that starts at `at`. */
function valueEndOf(body: Uint8Array, at: number): number {
  let depth = 0;
  for (let i = at; i < body.length; i++) {
    const byte = body[i];
    if (byte === QUOTE) i = stringEnd(body, i) - 1;
    else if (byte === 0x7b || byte === 0x5b) depth++;
    else if (byte === 0x7d || byte === 0x5d) {
      if (depth === 0) return i;
      if (--depth === 0) return i + 1;
    } else if (depth === 0 && (byte === 0x2c || byte <= 0x20)) return i;
  }
  if (depth === 0) return body.length;
  throw new ModelUploadError("An object or array is not closed");
}

function parseJson(body: Uint8Array, start: number, end: number): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body.subarray(start, end)));
  } catch (error) {
    throw new ModelUploadError(`Not JSON at bytes ${start} to ${end}: ${(error as Error).message}`);
  }
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const SEXTETS = new Int16Array(256).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) SEXTETS[ALPHABET.charCodeAt(i)] = i;
SEXTETS["-".charCodeAt(0)] = 62;
SEXTETS["_".charCodeAt(0)] = 63;

/**
 * Decodes base64 (standard or URL-safe, padding optional) from a span of the body into a new
 * array, one pass, no intermediate strings. JSON escapes a serializer may put in the text are
 * taken as what they mean: `\/` as "/", `\n` and `\r` (line-wrapped base64) skipped.
 */
export function decodeBase64(body: Uint8Array, span: Span): Uint8Array {
  const out = new Uint8Array(Math.floor((span.end - span.start) * 3 / 4));
  let length = 0;
  let bits = 0;
  let buffered = 0;
  let padding = false;
  for (let i = span.start; i < span.end; i++) {
    let byte = body[i];
    if (byte === BACKSLASH) {
      const escaped = body[++i];
      if (escaped === 0x6e || escaped === 0x72) continue;
      if (escaped !== 0x2f) throw new ModelUploadError("onnx is not base64: unexpected escape");
      byte = 0x2f;
    }
    if (byte === 0x3d) {
      padding = true;
      continue;
    }
    const sextet = SEXTETS[byte];
    if (sextet < 0 || padding) throw new ModelUploadError(`onnx is not base64: unexpected character at byte ${i}`);
    bits = (bits << 6) | sextet;
    buffered += 6;
    if (buffered >= 8) {
      buffered -= 8;
      out[length++] = (bits >> buffered) & 0xff;
      bits &= (1 << buffered) - 1;
    }
  }
  if (buffered >= 6) throw new ModelUploadError("onnx is not base64: its length is not possible");
  if (length === 0) throw new ModelUploadError("onnx: the model is empty");
  return out.subarray(0, length);
}
