/**
 * Reads at most `limit` bytes of a response body; the rest is discarded unread (the stream is
 * cancelled), so a peer answering with hundreds of megabytes costs `limit` bytes of memory.
 */
export async function readAtMost(response: Response, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const body = new Uint8Array(limit);
  let size = 0;
  while (size < limit) {
    const { done, value } = await reader.read();
    if (done) return body.slice(0, size);
    const take = Math.min(value.length, limit - size);
    body.set(value.subarray(0, take), size);
    size += take;
  }
  await reader.cancel().catch(() => {});
  return body.slice(0, size);
}

/** Statuses whose Response may not carry a body (the constructor throws otherwise). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/** A copy of `response` whose body holds at most `limit` bytes (read now); and how many that was. */
export async function boundedResponse(
  response: Response,
  limit: number,
): Promise<{ response: Response; bytes: number }> {
  const body = await readAtMost(response, limit);
  const init = { status: response.status, statusText: response.statusText, headers: response.headers };
  return {
    response: new Response(NULL_BODY_STATUSES.has(response.status) ? null : body, init),
    bytes: body.length,
  };
}
