import mqtt from "mqtt";

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
