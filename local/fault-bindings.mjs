// Fault-injecting stand-ins for bindings, for tests. The launcher (local/pipeline.mjs) loads
// this module as a Miniflare wrapped binding in place of a worker's real KV namespace, R2
// bucket (with its multipart uploads), D1 database or queue producer. Each wrapper forwards
// every call to the real binding (`INNER`), but first asks the test process what to do
// (`CONTROL`, a service binding to a function in the launcher): go ahead, wait, throw, or
// (KV) answer from a lagging snapshot. So production code runs unchanged: only what is
// behind the binding changes.
//
// workers-rs checks some bindings' constructor names: an R2 bucket must be an `R2Bucket`, a
// queue producer a `WorkerQueue`, a D1 database a `D1Database`. KV is taken as any object
// with get, getWithMetadata, put, list and delete. To add a kind: a class here, a case in
// `default`, and an entry in the launcher's FAULT_KINDS.

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
    return new FaultyMultipartUpload(this, await this.inner.createMultipartUpload(key, options));
  }
  resumeMultipartUpload(key, uploadId) {
    return new FaultyMultipartUpload(this, this.inner.resumeMultipartUpload(key, uploadId));
  }
}

/**
 * A multipart upload of the wrapped bucket: each part, the abort and the completion are
 * operations under fault control too (`uploadPart`, `abortMultipartUpload`,
 * `completeMultipartUpload`, with the object's key). workers-rs takes the object as it is.
 */
class FaultyMultipartUpload {
  constructor(bucket, inner) {
    this.bucket = bucket;
    this.inner = inner;
    this.key = inner.key;
    this.uploadId = inner.uploadId;
  }
  async uploadPart(partNumber, value, options) {
    try {
      await this.bucket.ask("uploadPart", this.key, { part: partNumber });
    } catch (error) {
      // A refused part's stream is never read: cancel it, as R2 would on a failure.
      if (value instanceof ReadableStream) await value.cancel(error).catch(() => {});
      throw error;
    }
    return this.inner.uploadPart(partNumber, value, options);
  }
  async abort() {
    await this.bucket.ask("abortMultipartUpload", this.key);
    return this.inner.abort();
  }
  async complete(parts) {
    await this.bucket.ask("completeMultipartUpload", this.key);
    return this.inner.complete(parts);
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

// The name workers-rs checks (worker::D1Database). Every statement that reaches D1 is one
// operation, named after the method that runs it (`first`, `all`, `run`, `raw`, `batch`,
// `exec`), with its SQL as the key (a batch's statements joined by newlines): a test matches
// statements with a RegExp on the SQL.
export class D1Database extends Faulty {
  prepare(sql) {
    return new FaultyStatement(this, this.inner.prepare(sql), sql);
  }
  async batch(statements) {
    await this.ask("batch", statements.map((s) => s.sql ?? "").join("\n"));
    return this.inner.batch(statements.map((s) => (s instanceof FaultyStatement ? s.inner : s)));
  }
  async exec(sql) {
    await this.ask("exec", sql);
    return this.inner.exec(sql);
  }
  withSession(constraint) {
    return this.inner.withSession(constraint);
  }
  async dump() {
    await this.ask("dump");
    return this.inner.dump();
  }
}

/** A prepared statement of the wrapped database: running it is an operation. */
class FaultyStatement {
  constructor(db, inner, sql) {
    this.db = db;
    this.inner = inner;
    this.sql = sql;
  }
  bind(...values) {
    return new FaultyStatement(this.db, this.inner.bind(...values), this.sql);
  }
  async first(column) {
    await this.db.ask("first", this.sql);
    return column === undefined ? this.inner.first() : this.inner.first(column);
  }
  async all() {
    await this.db.ask("all", this.sql);
    return this.inner.all();
  }
  async run() {
    await this.db.ask("run", this.sql);
    return this.inner.run();
  }
  async raw(options) {
    await this.db.ask("raw", this.sql);
    return this.inner.raw(options);
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
    case "d1":
      return new D1Database(env);
    default:
      throw new Error(`fault-bindings: unknown kind ${env.KIND}`);
  }
}
