/**
 * Splits the bytes a broker sends into MQTT 3.1.1 packets while holding at most a bounded part
 * of any one packet. mqtt-packet's parser buffers a whole packet before it emits it, so a single
 * 60 MB PUBLISH would sit in memory; this layer runs in front of it and keeps these rules:
 *
 * - A PUBLISH is read here: topic and packet id from its variable header, then its payload.
 *   A payload of at most `maxPayloadBytes` is kept whole. A larger one keeps only its first
 *   `keptPayloadBytes`; the rest is discarded as it streams in, and the frame still comes out
 *   (with `payloadBytes`, the size as sent) so that it can be refused and acknowledged.
 * - Any other packet is collected whole and handed on as bytes (for mqtt-packet), but only up
 *   to `maxControlBytes`: a larger one is a protocol error.
 * - A protocol error throws MqttProtocolError; the framer is unusable after it.
 */

export interface FramingLimits {
  /** Payload bytes of a PUBLISH kept whole; a larger payload is cut to `keptPayloadBytes`. */
  readonly maxPayloadBytes: number;
  /** Payload bytes kept of a PUBLISH over `maxPayloadBytes` (never more than `maxPayloadBytes`). */
  readonly keptPayloadBytes: number;
  /** Remaining length of any packet other than PUBLISH, at most. */
  readonly maxControlBytes: number;
}

export interface PublishFrame {
  readonly kind: "publish";
  readonly topic: string;
  readonly qos: 0 | 1 | 2;
  /** Present for QoS 1 and 2. */
  readonly messageId?: number;
  /** The whole payload, or its first bytes when `payloadBytes` is larger than its length. */
  readonly payload: Uint8Array;
  /** Payload size as sent. */
  readonly payloadBytes: number;
}

/** Any packet other than PUBLISH, whole, fixed header included. */
export interface ControlFrame {
  readonly kind: "control";
  readonly bytes: Uint8Array;
}

export type MqttFrame = PublishFrame | ControlFrame;

/** The broker sent bytes that are not MQTT 3.1.1, or a packet beyond the framing bounds. */
export class MqttProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MqttProtocolError";
  }
}

const PUBLISH = 3;
const PACKET_ID_BYTES = 2;

type Stage = "fixed-header" | "control" | "topic-length" | "topic" | "payload";

export class MqttFramer {
  readonly #limits: FramingLimits;
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });
  #stage: Stage = "fixed-header";
  #header = new Uint8Array(5);
  #headerLength = 0;
  /** Bytes of the current packet after its fixed header. */
  #remainingLength = 0;
  /** Where the bytes of the current stage go; the stage ends when it is full and nothing is left to skip. */
  #buffer = new Uint8Array(0);
  #filled = 0;
  #skip = 0;
  #topic = "";
  #messageId: number | undefined;
  #payloadBytes = 0;
  #broken = false;

  constructor(limits: FramingLimits) {
    this.#limits = limits;
  }

  /** Consumes one chunk from the socket; returns the packets it completed, in order. */
  push(chunk: Uint8Array): MqttFrame[] {
    if (this.#broken) throw new MqttProtocolError("Framer used after a protocol error");
    const frames: MqttFrame[] = [];
    try {
      let at = 0;
      while (at < chunk.length) {
        if (this.#stage === "fixed-header") {
          this.#readHeaderByte(chunk[at++]);
        } else {
          at += this.#consume(chunk.subarray(at));
        }
        this.#endStages(frames);
      }
    } catch (error) {
      this.#broken = true;
      throw error;
    }
    return frames;
  }

  #readHeaderByte(byte: number): void {
    this.#header[this.#headerLength++] = byte;
    if (this.#headerLength === 1) return;
    const lengthBytes = this.#headerLength - 1;
    this.#remainingLength += (byte & 0x7f) * 128 ** (lengthBytes - 1);
    if (byte & 0x80) {
      if (lengthBytes === 4) throw new MqttProtocolError("Malformed remaining length: more than 4 bytes");
      return;
    }
    this.#startBody();
  }

  #startBody(): void {
    const type = this.#header[0] >> 4;
    const remaining = this.#remainingLength;
    if (type === PUBLISH) {
      if (((this.#header[0] >> 1) & 3) === 3) throw new MqttProtocolError("PUBLISH with both QoS bits set");
      if (remaining < 2) throw new MqttProtocolError(`PUBLISH of ${remaining} bytes has no topic`);
      this.#expect("topic-length", 2);
      return;
    }
    if (remaining > this.#limits.maxControlBytes) {
      throw new MqttProtocolError(
        `Packet of type ${type} with ${remaining} bytes is over the bound of ${this.#limits.maxControlBytes} bytes`,
      );
    }
    this.#expect("control", this.#headerLength + remaining);
    this.#buffer.set(this.#header.subarray(0, this.#headerLength));
    this.#filled = this.#headerLength;
  }

  #expect(stage: Stage, bytes: number, skip = 0): void {
    this.#stage = stage;
    this.#buffer = new Uint8Array(bytes);
    this.#filled = 0;
    this.#skip = skip;
  }

  /** Copies into the stage's buffer, then discards what the stage skips; returns the bytes used. */
  #consume(bytes: Uint8Array): number {
    const copied = Math.min(bytes.length, this.#buffer.length - this.#filled);
    this.#buffer.set(bytes.subarray(0, copied), this.#filled);
    this.#filled += copied;
    const skipped = Math.min(bytes.length - copied, this.#skip);
    this.#skip -= skipped;
    return copied + skipped;
  }

  /** Ends every stage that is complete (an empty stage ends at once). */
  #endStages(frames: MqttFrame[]): void {
    while (this.#stage !== "fixed-header" && this.#filled === this.#buffer.length && this.#skip === 0) {
      const buffer = this.#buffer;
      if (this.#stage === "control") {
        frames.push({ kind: "control", bytes: buffer });
        this.#reset();
      } else if (this.#stage === "topic-length") {
        const topicLength = (buffer[0] << 8) | buffer[1];
        if (topicLength === 0) throw new MqttProtocolError("PUBLISH with an empty topic");
        const idBytes = this.#qos() > 0 ? PACKET_ID_BYTES : 0;
        if (2 + topicLength + idBytes > this.#remainingLength) {
          throw new MqttProtocolError(`PUBLISH of ${this.#remainingLength} bytes announces a longer topic`);
        }
        this.#expect("topic", topicLength + idBytes);
      } else if (this.#stage === "topic") {
        this.#readTopic(buffer);
      } else {
        frames.push({
          kind: "publish",
          topic: this.#topic,
          qos: this.#qos(),
          ...(this.#messageId === undefined ? {} : { messageId: this.#messageId }),
          payload: buffer,
          payloadBytes: this.#payloadBytes,
        });
        this.#reset();
      }
    }
  }

  #readTopic(buffer: Uint8Array): void {
    const idBytes = this.#qos() > 0 ? PACKET_ID_BYTES : 0;
    const topicBytes = buffer.subarray(0, buffer.length - idBytes);
    try {
      this.#topic = this.#decoder.decode(topicBytes);
    } catch {
      throw new MqttProtocolError("PUBLISH topic is not valid UTF-8");
    }
    this.#messageId = idBytes > 0 ? (buffer[buffer.length - 2] << 8) | buffer[buffer.length - 1] : undefined;
    const payloadBytes = this.#remainingLength - 2 - buffer.length;
    const kept = payloadBytes <= this.#limits.maxPayloadBytes
      ? payloadBytes
      : Math.min(this.#limits.keptPayloadBytes, this.#limits.maxPayloadBytes);
    this.#payloadBytes = payloadBytes;
    this.#expect("payload", kept, payloadBytes - kept);
  }

  #qos(): 0 | 1 | 2 {
    return ((this.#header[0] >> 1) & 3) as 0 | 1 | 2;
  }

  #reset(): void {
    this.#stage = "fixed-header";
    this.#headerLength = 0;
    this.#remainingLength = 0;
    this.#buffer = new Uint8Array(0);
    this.#filled = 0;
    this.#skip = 0;
    this.#topic = "";
    this.#messageId = undefined;
    this.#payloadBytes = 0;
  }
}
