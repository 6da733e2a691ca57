import { Buffer } from "node:buffer";
import { connect, type Socket } from "node:net";
import mqttPacket from "mqtt-packet";

export interface MqttMessage {
  topic: string;
  payload: Uint8Array;
}

export interface SessionOptions {
  host: string;
  port: number;
  clientId: string;
  topics: readonly string[];
  keepaliveSeconds: number;
  /** Settles when the message is safely handled; only then is it acknowledged (PUBACK). */
  onMessage: (message: MqttMessage) => Promise<void>;
  /** Unacknowledged messages held at most before reading from the socket pauses. */
  maxInFlight?: number;
  connectTimeoutMs?: number;
}

interface PendingAck {
  messageId: number;
  settled: boolean;
}

/**
 * One MQTT 3.1.1 connection that subscribes with QoS 1 on a persistent session (clean=false)
 * and sends each PUBACK only after `onMessage` settles, in the order the messages arrived.
 *
 * Unlike mqtt.js (whose customHandleAcks handles one message at a time, so every message
 * would wait for its own commit), many messages are in flight here and share commits.
 */
export class MqttSession {
  readonly #socket: Socket;
  readonly #options: SessionOptions;
  readonly #acks: PendingAck[] = [];
  readonly #closed: Promise<Error | null>;
  #resolveClosed!: (error: Error | null) => void;
  #keepaliveTimer: ReturnType<typeof setInterval> | undefined;
  #lastPacketAt = Date.now();
  #paused = false;
  #failure: Error | null = null;

  private constructor(socket: Socket, options: SessionOptions) {
    this.#socket = socket;
    this.#options = options;
    this.#closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** Connects and subscribes; resolves once the broker granted the subscription. */
  static open(options: SessionOptions): Promise<MqttSession> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: options.host, port: options.port });
      const session = new MqttSession(socket, options);
      const timeout = setTimeout(
        () => session.#fail(new Error(`MQTT connect timed out after ${options.connectTimeoutMs ?? 10_000} ms`)),
        options.connectTimeoutMs ?? 10_000,
      );
      session.#handshake((error) => {
        clearTimeout(timeout);
        if (error) reject(error);
        else resolve(session);
      });
    });
  }

  /** Settles with the error that ended the session, or null after `close()`. */
  get closed(): Promise<Error | null> {
    return this.#closed;
  }

  /** Stops reading, waits (bounded) until every received message is acknowledged, then closes. */
  async stop(timeoutMs: number): Promise<void> {
    this.#socket.pause();
    this.#paused = true;
    const deadline = Date.now() + timeoutMs;
    while (this.#acks.length > 0 && this.#failure === null && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    this.close();
  }

  close(): void {
    if (!this.#socket.destroyed) {
      this.#send({ cmd: "disconnect" });
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 500);
    }
    this.#finish(null);
  }

  #handshake(done: (error?: Error) => void): void {
    const options = this.#options;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let stage: "connack" | "suback" | "open" = "connack";
    parser.on("packet", (packet: mqttPacket.Packet) => {
      this.#lastPacketAt = Date.now();
      if (stage === "connack") {
        if (packet.cmd !== "connack") return this.#fail(new Error(`Expected CONNACK, got ${packet.cmd}`));
        if (packet.returnCode !== 0) {
          return this.#fail(new Error(`Broker refused connection: code ${packet.returnCode}`));
        }
        stage = "suback";
        this.#send({
          cmd: "subscribe",
          messageId: 1,
          subscriptions: options.topics.map((topic) => ({ topic, qos: 1 as const })),
        });
      } else if (stage === "suback" && packet.cmd === "suback") {
        if (packet.granted.some((code) => code === 128 || (typeof code === "number" && code > 2))) {
          return this.#fail(new Error(`Broker refused subscription to ${options.topics.join(", ")}`));
        }
        stage = "open";
        this.#startKeepalive();
        done();
      } else {
        this.#handlePacket(packet);
      }
    });
    parser.on("error", (error: Error) => this.#fail(error));
    this.#socket.on("data", (chunk: Buffer) => parser.parse(chunk));
    this.#socket.on("error", (error: Error) => this.#fail(error));
    this.#socket.on("close", () => this.#fail(new Error("Connection to MQTT broker closed")));
    this.#socket.on("connect", () => {
      this.#send({
        cmd: "connect",
        protocolId: "MQTT",
        protocolVersion: 4,
        clean: false,
        clientId: options.clientId,
        keepalive: options.keepaliveSeconds,
      });
    });
    this.#closed.then((error) => {
      if (stage !== "open") done(error ?? new Error("MQTT session closed during handshake"));
    });
  }

  #handlePacket(packet: mqttPacket.Packet): void {
    if (packet.cmd === "publish") {
      const pending = packet.qos > 0 ? { messageId: packet.messageId!, settled: false } : null;
      if (pending) this.#acks.push(pending);
      this.#applyBackpressure();
      this.#options.onMessage({ topic: packet.topic, payload: packet.payload as Uint8Array }).then(
        () => {
          if (!pending) return;
          pending.settled = true;
          this.#flushAcks();
        },
        (error: Error) => this.#fail(error),
      );
    }
  }

  /** PUBACKs go out in arrival order (MQTT 3.1.1 §4.6), as soon as a prefix has settled. */
  #flushAcks(): void {
    while (this.#acks.length > 0 && this.#acks[0].settled) {
      const { messageId } = this.#acks.shift()!;
      this.#send({ cmd: "puback", messageId });
    }
    this.#applyBackpressure();
  }

  #applyBackpressure(): void {
    const limit = this.#options.maxInFlight ?? 2_000;
    if (!this.#paused && this.#acks.length >= limit) {
      this.#paused = true;
      this.#socket.pause();
    } else if (this.#paused && this.#acks.length < limit / 2) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  #startKeepalive(): void {
    const intervalMs = this.#options.keepaliveSeconds * 1000;
    this.#keepaliveTimer = setInterval(() => {
      if (Date.now() - this.#lastPacketAt > intervalMs * 1.5) {
        this.#fail(new Error(`No answer from MQTT broker for ${Math.round(intervalMs * 1.5)} ms`));
      } else {
        this.#send({ cmd: "pingreq" });
      }
    }, intervalMs / 2);
  }

  #send(packet: mqttPacket.Packet): void {
    if (!this.#socket.destroyed && this.#socket.writable) this.#socket.write(mqttPacket.generate(packet));
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    this.#socket.destroy();
    this.#finish(this.#failure);
  }

  #finish(error: Error | null): void {
    clearInterval(this.#keepaliveTimer);
    this.#resolveClosed(error);
  }
}
