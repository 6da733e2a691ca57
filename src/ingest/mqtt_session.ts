import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import mqttPacket from "mqtt-packet";
import { laterTurn } from "../event_loop_turn.ts";
import { BrokerRefusedError } from "./broker_access.ts";
import { type MqttFrame, MqttFramer, type PublishFrame } from "./mqtt_framing.ts";

export interface MqttMessage {
  topic: string;
  /** The whole payload, or only its first bytes when `payloadBytes` is larger than `maxPayloadBytes`. */
  payload: Uint8Array;
  /** Payload size as sent. */
  payloadBytes: number;
}

export interface SessionOptions {
  /**
   * Opens the connected socket to the broker (Outpost: `Egress.socket`, which checks and audits
   * the attempt). `signal` aborts it when the connect timeout passes.
   */
  connect: (signal: AbortSignal) => Promise<Socket>;
  clientId: string;
  /** The broker login, sent in CONNECT; a refusal (CONNACK 4 or 5) fails `open` with BrokerRefusedError. */
  username?: string;
  password?: string;
  topics: readonly string[];
  keepaliveSeconds: number;
  /** Payload bytes of one message held at most; a larger message arrives cut short (see `MqttMessage`). */
  maxPayloadBytes: number;
  /** Payload bytes kept of a message over `maxPayloadBytes`. */
  keptPayloadBytes: number;
  /** Settles when the message is safely handled; only then is it acknowledged (PUBACK). */
  onMessage: (message: MqttMessage) => Promise<void>;
  /** Unacknowledged messages held at most before reading from the socket pauses. */
  maxInFlight?: number;
  connectTimeoutMs?: number;
}

/** A packet other than PUBLISH longer than this ends the session (a SUBACK is a few bytes per topic). */
const MAX_CONTROL_PACKET_BYTES = 4_096;
/**
 * Longest run of message handling in one turn of the event loop. A 64 KB chunk holds about a
 * thousand small messages (about 100 ms of parsing and validation); handled in one go, a flood
 * starved HTTP requests and SIGTERM of the event loop for seconds.
 */
const SLICE_MS = 5;

interface InFlight {
  /** Absent for QoS 0: nothing to acknowledge, but shutdown still waits for it. */
  messageId?: number;
  settled: boolean;
}

/**
 * One MQTT 3.1.1 connection that subscribes with QoS 1 on a persistent session (clean=false)
 * and sends each PUBACK only after `onMessage` settles, in the order the messages arrived.
 *
 * Unlike mqtt.js (whose customHandleAcks handles one message at a time, so every message
 * would wait for its own commit), many messages are in flight here and share commits.
 *
 * Bytes from the broker go through MqttFramer, which never holds more than `maxPayloadBytes`
 * of one message. Packets are handed on in slices of at most SLICE_MS, with the socket paused
 * in between, so that other work gets its turn during a flood. Reading pauses while
 * `maxInFlight` messages await their acknowledgement, and after `stop()` the socket is never
 * read again and no further message is handed on: those stay unacknowledged, and the broker
 * redelivers them to the next session.
 */
export class MqttSession {
  readonly #socket: Socket;
  readonly #options: SessionOptions;
  readonly #inFlight: InFlight[] = [];
  /** Packets read but not yet handed on, from `#backlogAt`. */
  #backlog: MqttFrame[] = [];
  #backlogAt = 0;
  #handleFrame: (frame: MqttFrame) => void = () => {};
  readonly #closed: Promise<Error | null>;
  #resolveClosed!: (error: Error | null) => void;
  #onDrained: (() => void) | null = null;
  #keepaliveTimer: ReturnType<typeof setInterval> | undefined;
  #lastReceivedAt = performance.now();
  #paused = false;
  #stopping = false;
  /** The handshake: waiting for the CONNACK, open and waiting for the SUBACK, or subscribed. */
  #stage: "connack" | "suback" | "open" = "connack";
  #failure: Error | null = null;

  private constructor(socket: Socket, options: SessionOptions) {
    this.#socket = socket;
    this.#options = options;
    this.#closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /**
   * Connects and subscribes; resolves once the broker accepted the connection (CONNACK). A refused
   * subscription (SUBACK) ends the session later, through `closed`.
   */
  static async open(options: SessionOptions): Promise<MqttSession> {
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    const timedOut = () => new Error(`MQTT connect timed out after ${timeoutMs} ms`);
    const deadline = AbortSignal.timeout(timeoutMs);
    let socket: Socket;
    try {
      socket = await options.connect(deadline);
    } catch (error) {
      throw deadline.aborted ? timedOut() : error;
    }
    return await new Promise((resolve, reject) => {
      const session = new MqttSession(socket, options);
      const onTimeout = () => session.#fail(timedOut());
      if (deadline.aborted) queueMicrotask(onTimeout);
      else deadline.addEventListener("abort", onTimeout, { once: true });
      session.#handshake((error) => {
        deadline.removeEventListener("abort", onTimeout);
        if (error) reject(error);
        else resolve(session);
      });
    });
  }

  /** The broker granted the subscription (SUBACK). */
  get subscribed(): boolean {
    return this.#stage === "open";
  }

  /** Settles with the error that ended the session, or null after `close()`. */
  get closed(): Promise<Error | null> {
    return this.#closed;
  }

  /**
   * Stops reading for good, waits (at most `timeoutMs`) until every message already handed on
   * is settled and acknowledged, then disconnects. Resolves with the count of messages handed
   * on but left unacknowledged (the broker redelivers them).
   */
  async stop(timeoutMs: number): Promise<number> {
    this.#stopping = true;
    this.#pause();
    if (this.#inFlight.length > 0 && this.#failure === null) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.#onDrained = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
        this.#closed,
      ]);
      clearTimeout(timer);
    }
    const unacknowledged = this.#inFlight.length;
    this.close();
    return unacknowledged;
  }

  close(): void {
    this.#stopping = true;
    if (!this.#socket.destroyed) {
      this.#send({ cmd: "disconnect" });
      this.#socket.end();
      const timer = setTimeout(() => this.#socket.destroy(), 500);
      this.#socket.once("close", () => clearTimeout(timer));
    }
    this.#finish(null);
  }

  #handshake(done: (error?: Error) => void): void {
    const options = this.#options;
    const framer = new MqttFramer({
      maxPayloadBytes: options.maxPayloadBytes,
      keptPayloadBytes: options.keptPayloadBytes,
      maxControlBytes: MAX_CONTROL_PACKET_BYTES,
    });
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on("packet", (packet: mqttPacket.Packet) => {
      if (this.#stage === "connack") {
        if (packet.cmd !== "connack") return this.#fail(new Error(`Expected CONNACK, got ${packet.cmd}`));
        if (packet.returnCode !== 0) return this.#fail(new BrokerRefusedError(packet.returnCode ?? -1));
        this.#stage = "suback";
        this.#send({
          cmd: "subscribe",
          messageId: 1,
          subscriptions: options.topics.map((topic) => ({ topic, qos: 1 as const })),
        });
        // Open from here: a persistent session's queued messages follow the CONNACK, and its SUBACK
        // comes only after them. Waiting for it timed the connection out while a backlog of minutes
        // was being stored, and each new attempt took again the messages left unacknowledged.
        this.#startKeepalive();
        done();
      } else if (this.#stage === "suback" && packet.cmd === "suback") {
        if (packet.granted.some((code) => code === 128 || (typeof code === "number" && code > 2))) {
          return this.#fail(new Error(`Broker refused subscription to ${options.topics.join(", ")}`));
        }
        this.#stage = "open";
      }
    });
    parser.on("error", (error: Error) => this.#fail(error));
    this.#handleFrame = (frame) => {
      if (frame.kind === "publish") this.#handlePublish(frame);
      else parser.parse(Buffer.from(frame.bytes.buffer, frame.bytes.byteOffset, frame.bytes.byteLength));
    };
    this.#socket.on("data", (chunk: Buffer) => {
      // Data that was already on its way when stop() paused the socket is dropped unacknowledged.
      if (this.#stopping || this.#failure) return;
      this.#lastReceivedAt = performance.now();
      let frames;
      try {
        frames = framer.push(chunk);
      } catch (error) {
        return this.#fail(error as Error);
      }
      const idle = this.#backlogAt === this.#backlog.length;
      if (idle) {
        this.#backlog = frames;
        this.#backlogAt = 0;
        this.#workOffBacklog();
      } else {
        this.#backlog.push(...frames);
      }
    });
    this.#socket.on("error", (error: Error) => this.#fail(error));
    this.#socket.on("close", () => this.#fail(new Error("Connection to MQTT broker closed")));
    // The socket arrives connected (SessionOptions.connect).
    this.#send({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clean: false,
      clientId: options.clientId,
      keepalive: options.keepaliveSeconds,
      ...(options.username === undefined ? {} : { username: options.username }),
      ...(options.password === undefined ? {} : { password: Buffer.from(options.password) }),
    });
    this.#closed.then((error) => {
      if (this.#stage === "connack") done(error ?? new Error("MQTT session closed during handshake"));
    });
    // The broker may have hung up before the listeners above were added (a TLS 1.3 broker refuses
    // a client certificate just after the handshake): its error is then all that is left.
    if (this.#socket.destroyed) this.#fail(this.#socket.errored ?? new Error("Connection to MQTT broker closed"));
  }

  /** Hands on packets for at most SLICE_MS, then yields a turn of the event loop with reading paused. */
  #workOffBacklog(): void {
    const deadline = performance.now() + SLICE_MS;
    while (this.#backlogAt < this.#backlog.length) {
      if (this.#stopping || this.#failure) break;
      if (performance.now() > deadline) {
        this.#updateReading();
        laterTurn(() => this.#workOffBacklog());
        return;
      }
      this.#handleFrame(this.#backlog[this.#backlogAt++]);
    }
    this.#backlog = [];
    this.#backlogAt = 0;
    this.#updateReading();
  }

  #handlePublish(frame: PublishFrame): void {
    const entry: InFlight = { settled: false };
    if (frame.qos > 0) entry.messageId = frame.messageId;
    this.#inFlight.push(entry);
    const message = { topic: frame.topic, payload: frame.payload, payloadBytes: frame.payloadBytes };
    this.#options.onMessage(message).then(
      () => {
        entry.settled = true;
        this.#flushAcks();
      },
      (error: Error) => this.#fail(error),
    );
  }

  /** PUBACKs go out in arrival order (MQTT 3.1.1 §4.6), as soon as a prefix has settled; one write for all. */
  #flushAcks(): void {
    let settled = 0;
    while (settled < this.#inFlight.length && this.#inFlight[settled].settled) settled++;
    if (settled === 0) return;
    const acks = this.#inFlight.splice(0, settled).filter((entry) => entry.messageId !== undefined);
    if (acks.length > 0 && !this.#socket.destroyed && this.#socket.writable) {
      this.#socket.write(Buffer.concat(acks.map(({ messageId }) => mqttPacket.generate({ cmd: "puback", messageId }))));
    }
    if (this.#inFlight.length === 0) this.#onDrained?.();
    this.#updateReading();
  }

  /**
   * Reads only while nothing waits in the backlog and fewer than `maxInFlight` messages await
   * their acknowledgement (resuming below half of it); never again once stopping.
   */
  #updateReading(): void {
    const limit = this.#options.maxInFlight ?? 2_000;
    const busy = this.#backlogAt < this.#backlog.length;
    if (this.#stopping || busy || this.#inFlight.length >= limit) {
      this.#pause();
    } else if (this.#paused && this.#inFlight.length < limit / 2) {
      this.#paused = false;
      // Silence while paused says nothing about the broker: the keepalive counts from here.
      this.#lastReceivedAt = performance.now();
      this.#socket.resume();
    }
  }

  #pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#socket.pause();
  }

  #startKeepalive(): void {
    const intervalMs = this.#options.keepaliveSeconds * 1000;
    this.#keepaliveTimer = setInterval(() => {
      if (!this.#paused && performance.now() - this.#lastReceivedAt > intervalMs * 1.5) {
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
