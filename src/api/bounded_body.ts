import { HTTPException } from "hono/http-exception";
import { LimitExceededError } from "../limit_exceeded_error.ts";

/**
 * Reads a request body of at most `maxBytes` (the bound named by the manifest `key`), refusing early on a
 * larger Content-Length and otherwise as soon as more has arrived: memory is what the client
 * has actually sent, never what it announced. A body that breaks off (broken chunk framing, a
 * reset) is a 400.
 */
export async function readBoundedBody(
  request: Request,
  maxBytes: number,
  key: string | null,
): Promise<Uint8Array> {
  const message = `Body is larger than ${maxBytes} bytes`;
  // A bound with no manifest key (a fixed one) is a plain 413.
  const tooLarge = () =>
    key === null ? new HTTPException(413, { message }) : new LimitExceededError(key, maxBytes, message, 413);
  const announced = request.headers.get("content-length");
  if (announced !== null && Number(announced) > maxBytes) throw tooLarge();
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        void reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof LimitExceededError || error instanceof HTTPException) throw error;
    throw new HTTPException(400, { message: `The body could not be read: ${(error as Error).message}` });
  }
  if (chunks.length === 1) return chunks[0];
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The bytes as UTF-8 text; anything else is a 400. */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new HTTPException(400, { message: "The body is not UTF-8" });
  }
}

/** Nesting any reading body needs at most: `{"readings":[{"values":{...}}]}` is 4 deep. */
export const MAX_JSON_DEPTH = 8;

/**
 * Whether JSON text nests deeper than `max` arrays and objects, found by one pass over the text
 * before it is parsed (JSON.parse of `[[[[...` 50,000 deep costs about 2 MiB of heap per request).
 */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (inString) {
      if (code === 0x5c) i++; // backslash: skip the escaped character
      else if (code === 0x22) inString = false;
    } else if (code === 0x22) {
      inString = true;
    } else if (code === 0x5b || code === 0x7b) {
      if (++depth > max) return true;
    } else if (code === 0x5d || code === 0x7d) {
      depth--;
    }
  }
  return false;
}
