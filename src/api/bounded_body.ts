import { HTTPException } from "hono/http-exception";
import { LimitExceededError } from "../limit_exceeded_error.ts";

/**
 * Reads a request body of at most `maxBytes` (the bound named by `key`), refusing early on a
 * larger Content-Length and otherwise as soon as more has arrived: memory is what the client
 * has actually sent, never what it announced. A body that breaks off (broken chunk framing, a
 * reset) is a 400.
 */
export async function readBoundedBody(request: Request, maxBytes: number, key: string): Promise<Uint8Array> {
  const tooLarge = () => new LimitExceededError(key, maxBytes, `Body is larger than ${maxBytes} bytes`, 413);
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
    if (error instanceof LimitExceededError) throw error;
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
