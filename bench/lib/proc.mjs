// The workerd process behind a Miniflare instance, and its memory as Linux reports it.

import { readFileSync, readdirSync, writeFileSync } from "node:fs";

/** PIDs of workerd processes that are children of this node process. */
export function workerdChildren() {
  const pids = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === process.pid && comm.startsWith("workerd")) pids.push(Number(entry));
    } catch {
      // The process went away while we looked.
    }
  }
  return pids;
}

/** The one workerd child that is not in `before`. */
export function newWorkerd(before) {
  const fresh = workerdChildren().filter((pid) => !before.includes(pid));
  if (fresh.length !== 1) throw new Error(`expected one new workerd child, found ${fresh.join(", ") || "none"}`);
  return fresh[0];
}

/** VmRSS and VmHWM (peak RSS) of a process, in bytes. */
export function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))?.[1]) * 1024;
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

/** CPU time of every thread of a process so far, in ms (from the schedstat of each task in /proc). */
export function cpuMs(pid) {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // The thread exited while we looked.
    }
  }
  return ns / 1e6;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** utime + stime of a process (every thread, including exited ones) so far, in ms. */
export function processCpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat(5); `fields` starts at field 3 (state).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
}

/** Resets a process's peak RSS (VmHWM) to its current RSS (`clear_refs`, value 5). */
export function resetPeak(pid) {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}
