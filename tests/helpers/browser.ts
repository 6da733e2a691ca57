/**
 * Headless Chromium (Debian's `chromium`, no browser download) driven over the DevTools
 * protocol with Deno's own WebSocket: open a page, collect console errors, uncaught exceptions
 * and failed requests, evaluate expressions, take screenshots. Flags as the machine notes say:
 * no sandbox (CI runs as root), no background networking (the network is closed).
 */
export const CHROMIUM = "/usr/bin/chromium";

export function chromiumAvailable(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

export interface PageProblems {
  consoleErrors: string[];
  exceptions: string[];
  failedRequests: string[];
}

export class BrowserPage {
  readonly problems: PageProblems = { consoleErrors: [], exceptions: [], failedRequests: [] };
  #socket: WebSocket;
  #nextId = 1;
  #pending = new Map<number, { resolve: (value: Record<string, unknown>) => void; reject: (error: Error) => void }>();
  #listeners = new Map<string, ((params: Record<string, unknown>) => void)[]>();

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (message) => {
      const data = JSON.parse(String(message.data));
      if (data.id !== undefined) {
        const pending = this.#pending.get(data.id);
        this.#pending.delete(data.id);
        if (data.error) pending?.reject(new Error(`${data.error.message} ${data.error.data ?? ""}`));
        else pending?.resolve(data.result);
      } else for (const listener of this.#listeners.get(data.method) ?? []) listener(data.params);
    };
    this.#on("Runtime.consoleAPICalled", (params) => {
      if (params.type !== "error") return;
      const args = params.args as { value?: unknown; description?: string }[];
      this.problems.consoleErrors.push(args.map((arg) => String(arg.value ?? arg.description)).join(" "));
    });
    this.#on("Runtime.exceptionThrown", (params) => {
      const details = params.exceptionDetails as { text: string; exception?: { description?: string } };
      this.problems.exceptions.push(details.exception?.description ?? details.text);
    });
    this.#on("Log.entryAdded", (params) => {
      const entry = params.entry as { level: string; text: string; url?: string };
      if (entry.level === "error") this.problems.consoleErrors.push(`${entry.text} ${entry.url ?? ""}`);
    });
    this.#on("Network.loadingFailed", (params) => {
      this.problems.failedRequests.push(
        `${params.errorText} ${params.blockedReason ?? ""} (request ${params.requestId})`,
      );
    });
    this.#on("Network.responseReceived", (params) => {
      const response = params.response as { status: number; url: string };
      if (response.status >= 400) this.problems.failedRequests.push(`${response.status} ${response.url}`);
    });
  }

  static async open(debuggerUrl: string): Promise<BrowserPage> {
    const socket = new WebSocket(debuggerUrl);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`Cannot reach ${debuggerUrl}`));
    });
    const page = new BrowserPage(socket);
    for (const domain of ["Runtime", "Log", "Network", "Page"]) await page.send(`${domain}.enable`);
    await page.send("Emulation.setDeviceMetricsOverride", {
      width: 1280,
      height: 900,
      deviceScaleFactor: 1,
      mobile: false,
    });
    return page;
  }

  #on(method: string, listener: (params: Record<string, unknown>) => void) {
    this.#listeners.set(method, [...(this.#listeners.get(method) ?? []), listener]);
  }

  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    this.#socket.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
  }

  async navigate(url: string): Promise<void> {
    const loaded = new Promise<void>((resolve) => this.#on("Page.loadEventFired", () => resolve()));
    await this.send("Page.navigate", { url });
    await loaded;
  }

  /** The value of a JavaScript expression in the page (awaited when it is a promise). */
  async evaluate<T>(expression: string): Promise<T> {
    const result = await this.send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
    if (result.exceptionDetails) throw new Error(`evaluate ${expression}: ${JSON.stringify(result.exceptionDetails)}`);
    return (result.result as { value: T }).value;
  }

  /** Polls `expression` until it is truthy; throws with `what` after `timeoutMs`. */
  async waitFor(expression: string, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await this.evaluate<boolean>(`Boolean(${expression})`))) {
      if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async screenshot(path: string): Promise<void> {
    const { data } = await this.send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true });
    await Deno.writeFile(path, Uint8Array.from(atob(String(data)), (char) => char.charCodeAt(0)));
  }

  close(): void {
    this.#socket.close();
  }
}

/** A headless Chromium with a fresh profile; `page()` opens a tab. */
export class Browser {
  #process: Deno.ChildProcess;
  #profile: string;
  #port: number;

  private constructor(process: Deno.ChildProcess, profile: string, port: number) {
    this.#process = process;
    this.#profile = profile;
    this.#port = port;
  }

  static async launch(): Promise<Browser> {
    const profile = await Deno.makeTempDir({ prefix: "outpost-chromium-" });
    const process = new Deno.Command(CHROMIUM, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        "about:blank",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = process.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = Date.now() + 30_000;
    while (!/DevTools listening on ws:\/\/[^:]+:(\d+)\//.test(text)) {
      const { value, done } = await reader.read();
      if (done || Date.now() > deadline) throw new Error(`Chromium did not start: ${text}`);
      text += value;
    }
    // Keep draining stderr so Chromium never blocks on a full pipe.
    (async () => {
      while (!(await reader.read()).done) { /* drained */ }
    })().catch(() => {});
    const port = Number(text.match(/DevTools listening on ws:\/\/[^:]+:(\d+)\//)![1]);
    return new Browser(process, profile, port);
  }

  async page(): Promise<BrowserPage> {
    const response = await fetch(`http://127.0.0.1:${this.#port}/json/new?about:blank`, { method: "PUT" });
    const target = await response.json() as { webSocketDebuggerUrl: string };
    return await BrowserPage.open(target.webSocketDebuggerUrl);
  }

  async close(): Promise<void> {
    try {
      this.#process.kill("SIGTERM");
    } catch { /* gone */ }
    await this.#process.status;
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}
