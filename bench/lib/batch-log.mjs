// Miniflare's own log, for what it says about queue batches.

import { Log, LogLevel } from "miniflare";

/** Miniflare's log, kept only for its queue lines: "QUEUE <queue> <acked>/<total> (<ms>ms)". */
export class BatchLog extends Log {
  constructor() {
    super(LogLevel.INFO);
    this.batches = [];
  }
  log(message) {
    const m = message.replace(/\x1b\[[0-9;]*m/g, "").match(/QUEUE (\S+) (\d+)\/(\d+) \((\d+)ms\)/);
    if (m) this.batches.push({ queue: m[1], acked: Number(m[2]), size: Number(m[3]), ms: Number(m[4]) });
  }
}
