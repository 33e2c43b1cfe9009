// Fault-injecting stand-ins for bindings, for tests. The launcher (local/pipeline.mjs) loads
// this module as a Miniflare wrapped binding in place of a worker's real KV namespace, R2
// bucket or queue producer. Each wrapper forwards every call to the real binding (`INNER`),
// but first asks the test process what to do (`CONTROL`, a service binding to a function in
// the launcher): go ahead, wait, throw, or (KV) answer from a lagging snapshot. So
// production code runs unchanged: only what is behind the binding changes.
//
// workers-rs checks some bindings' constructor names: an R2 bucket must be an `R2Bucket`, a
// queue producer a `WorkerQueue`. KV is taken as any object with get, getWithMetadata, put,
// list and delete. To add a kind: a class here, a case in `default`, and an entry in the
// launcher's FAULT_KINDS.

/** Asks the launcher about one operation; resolves to its decision. */
async function ask(env, op, key, extra = {}) {
  const response = await env.CONTROL.fetch("http://fault-control/", {
    method: "POST",
    body: JSON.stringify({ worker: env.WORKER, binding: env.BINDING, op, key, ...extra }),
  });
  if (!response.ok) throw new Error(`fault control: ${response.status} ${await response.text()}`);
  const decision = await response.json();
  if (decision.delayMs) await new Promise((resolve) => setTimeout(resolve, decision.delayMs));
  if (decision.fail) throw new Error(decision.fail);
  return decision;
}

const keyOf = (k) => (typeof k === "string" ? k : Array.isArray(k) ? k.join(",") : undefined);

class Faulty {
  constructor(env) {
    this.env = env;
    this.inner = env.INNER;
  }
  ask(op, key, extra) {
    return ask(this.env, op, keyOf(key), extra);
  }
}

// The name workers-rs checks (worker::Bucket).
export class R2Bucket extends Faulty {
  async head(key) {
    await this.ask("head", key);
    return this.inner.head(key);
  }
  async get(key, options) {
    await this.ask("get", key);
    return this.inner.get(key, options);
  }
  async put(key, value, options) {
    await this.ask("put", key);
    return this.inner.put(key, value, options);
  }
  async delete(keys) {
    await this.ask("delete", keys);
    return this.inner.delete(keys);
  }
  async list(options) {
    await this.ask("list", options?.prefix);
    return this.inner.list(options);
  }
  async createMultipartUpload(key, options) {
    await this.ask("createMultipartUpload", key);
    return this.inner.createMultipartUpload(key, options);
  }
  resumeMultipartUpload(key, uploadId) {
    return this.inner.resumeMultipartUpload(key, uploadId);
  }
}

// The name workers-rs checks (worker::Queue).
export class WorkerQueue extends Faulty {
  async send(body, options) {
    await this.ask("send");
    return this.inner.send(body, options);
  }
  async sendBatch(messages, options) {
    await this.ask("sendBatch");
    return this.inner.sendBatch(messages, options);
  }
}

/** A text value as KV would return it for `type`. */
function asType(text, type) {
  if (text === null) return null;
  switch (type) {
    case "json":
      return JSON.parse(text);
    case "arrayBuffer":
      return new TextEncoder().encode(text).buffer;
    case "stream":
      return new Response(text).body;
    default:
      return text;
  }
}

const typeOf = (options) => (typeof options === "string" ? options : (options?.type ?? "text"));

/**
 * KV, optionally eventually consistent: with `stale` set in the launcher, a read within the
 * lag of a write still gets the value from before it, and a miss is cached for a while, as
 * production KV does (up to 60 s). The snapshot is kept by the launcher, so every worker
 * whose KV binding is wrapped sees the same lag.
 */
export class FaultyKv extends Faulty {
  async getWithMetadata(key, options) {
    const decision = await this.ask("get", key);
    if (decision.stale) {
      const { value, metadata } = decision.stale;
      return { value: asType(value, typeOf(options)), metadata, cacheStatus: null };
    }
    const result = await this.inner.getWithMetadata(key, options);
    if (result.value === null && decision.cacheMisses) await this.ask("missed", key);
    return result;
  }
  async get(key, options) {
    return (await this.getWithMetadata(key, options)).value;
  }
  async put(key, value, options) {
    const decision = await this.ask("put", key);
    const before = decision.snapshot ? await this.inner.getWithMetadata(key, "text") : null;
    await this.inner.put(key, value, options);
    if (before) await this.ask("wrote", key, { previous: before.value, metadata: before.metadata });
  }
  async delete(key) {
    const decision = await this.ask("delete", key);
    const before = decision.snapshot ? await this.inner.getWithMetadata(key, "text") : null;
    await this.inner.delete(key);
    if (before) await this.ask("wrote", key, { previous: before.value, metadata: before.metadata });
  }
  async list(options) {
    await this.ask("list", options?.prefix);
    return this.inner.list(options);
  }
}

export default function (env) {
  switch (env.KIND) {
    case "r2":
      return new R2Bucket(env);
    case "queue":
      return new WorkerQueue(env);
    case "kv":
      return new FaultyKv(env);
    default:
      throw new Error(`fault-bindings: unknown kind ${env.KIND}`);
  }
}
