import mqtt from "mqtt";

export type Publisher = Awaited<ReturnType<typeof connectPublisher>>;

/** An mqtt.js client that publishes test payloads with QoS 1 and waits for each PUBACK. */
export async function connectPublisher(url: string, clientId = `pub-${crypto.randomUUID()}`) {
  const client = await mqtt.connectAsync(url, { clientId, reconnectPeriod: 0, protocolVersion: 4 });
  return {
    publish: (topic: string, payload: string | Uint8Array) => client.publishAsync(topic, payload as string, { qos: 1 }),
    subscribe: (topic: string) => client.subscribeAsync(topic, { qos: 1 }),
    on: client.on.bind(client),
    close: () => client.endAsync(true),
  };
}

export interface Flood {
  /** Messages the broker has acknowledged so far. */
  readonly acknowledged: number;
  /** Stops publishing; resolves with the count once every message sent is acknowledged by the broker. */
  stop(): Promise<number>;
}

/**
 * Publishes messages `message(0)`, `message(1)`, ... to `topic` as fast as the broker takes them,
 * with `window` of them awaiting the broker's PUBACK at any time.
 */
export function flood(publisher: Publisher, topic: string, message: (index: number) => string, window = 200): Flood {
  let next = 0;
  let acknowledged = 0;
  let stopped = false;
  const workers = Array.from({ length: window }, async () => {
    while (!stopped) {
      await publisher.publish(topic, message(next++));
      acknowledged++;
    }
  });
  const done = Promise.all(workers);
  return {
    get acknowledged() {
      return acknowledged;
    },
    async stop() {
      stopped = true;
      await done;
      return acknowledged;
    },
  };
}
