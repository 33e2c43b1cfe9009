// The V8 inspector of a worker in workerd (Miniflare with `inspectorPort: 0`), for what the
// process cannot tell: the CPU profile of one isolate, and the size of its wasm memories.

import WebSocket from "ws";

export class Inspector {
  /** Connects to the worker `name` of a Miniflare started with `inspectorPort`. */
  static async forWorker(mf, name) {
    return Inspector.open(new URL(`/core:user:${name}`, await mf.getInspectorURL()));
  }

  static async open(url, timeoutMs = 10_000) {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`inspector: no connection to ${url} after ${timeoutMs} ms`));
      }, timeoutMs);
      ws.once("open", () => resolve(clearTimeout(timer)));
      ws.once("error", (e) => reject(e, clearTimeout(timer)));
    });
    return new Inspector(ws);
  }

  constructor(ws) {
    this.ws = ws;
    this.next = 1;
    this.pending = new Map();
    /** Execution contexts announced after `Runtime.enable` (workerd has no default one). */
    this.contexts = [];
    ws.on("message", (data) => {
      const msg = JSON.parse(data);
      if (msg.method === "Runtime.executionContextCreated") this.contexts.push(msg.params.context.id);
      const p = this.pending.get(msg.id);
      if (p) {
        this.pending.delete(msg.id);
        msg.error ? p.reject(new Error(msg.error.message)) : p.resolve(msg.result);
      }
    });
  }

  /** One command; fails after `timeoutMs` without an answer (a CPU profile can take a while). */
  send(method, params = {}, timeoutMs = 60_000) {
    const id = this.next++;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`inspector: no answer to ${method} after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => resolve(v, clearTimeout(timer)),
        reject: (e) => reject(e, clearTimeout(timer)),
      });
    });
  }

  /**
   * Byte size of every live `WebAssembly.Memory` of the isolate (a Rust worker has one: its
   * linear memory, which grows but never shrinks), found with `Runtime.queryObjects`. The
   * Runtime domain is on only meanwhile: a session can stay open across a measurement.
   */
  async wasmMemoryBytes() {
    this.contexts = [];
    await this.send("Runtime.enable");
    try {
      const proto = await this.send("Runtime.evaluate", {
        expression: "WebAssembly.Memory.prototype",
        contextId: this.contexts.at(-1),
      });
      const { objects } = await this.send("Runtime.queryObjects", { prototypeObjectId: proto.result.objectId });
      const { result } = await this.send("Runtime.callFunctionOn", {
        objectId: objects.objectId,
        functionDeclaration: "function () { return this.map((m) => m.buffer.byteLength); }",
        returnByValue: true,
      });
      return result.value;
    } finally {
      await this.send("Runtime.releaseObjectGroup", { objectGroup: "" }).catch(() => {});
      await this.send("Runtime.disable");
    }
  }

  /** The isolate's JS heap: `{ usedSize, totalSize }` in bytes. */
  heapUsage() {
    return this.send("Runtime.getHeapUsage");
  }

  close() {
    this.ws.close();
  }
}
