// What each crate costs in a built worker's wasm: the code of every function, grouped by the
// crate that defines it (from the module's own `name` section, kept by a build with
// KEEP_WASM_NAMES=1), raw and gzipped on its own; and the sections that are not code. A
// generic function counts for the crate that defines it, whichever crate instantiates it;
// the workers' async code is mostly inlined into the futures of their entry points, counted
// apart. Gzip of a part alone is a little more than what it adds to the gzip of the whole
// (no shared dictionary).
//
//   KEEP_WASM_NAMES=1 npm run build && node bench/wasm-crates.mjs [--top 12]
//   (the normal build strips the name section; see scripts/build-worker.sh)

import { readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";

import { ROOT } from "../local/pipeline.mjs";

const argv = process.argv.slice(2);
const top = Number(argv.includes("--top") ? argv[argv.indexOf("--top") + 1] : 12);
const KiB = 1024;

function leb(bytes, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const b = bytes[at++];
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if (b < 0x80) return [value, at];
  }
}

/** Sections (`{ id, name, bytes }`), function bodies and function names of a wasm module. */
function parse(bytes) {
  const sections = [];
  for (let at = 8; at < bytes.length; ) {
    const id = bytes[at];
    const [size, start] = leb(bytes, at + 1);
    const body = bytes.subarray(start, start + size);
    let name = "";
    if (id === 0) {
      const [n, s] = leb(body, 0);
      name = body.subarray(s, s + n).toString("utf8");
    }
    sections.push({ id, name, bytes: body, size: start + size - at });
    at = start + size;
  }
  const section = (id, name = "") => sections.find((s) => s.id === id && s.name === name)?.bytes;
  // Imported functions come first in the function index space.
  let imported = 0;
  const imports = section(2);
  if (imports) {
    let [n, at] = leb(imports, 0);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 2; k++) {
        const [len, s] = leb(imports, at);
        at = s + len;
      }
      const kind = imports[at++];
      if (kind === 0) {
        imported++;
        at = leb(imports, at)[1];
      } else if (kind === 1) {
        at++;
        const [flags, s] = leb(imports, at);
        at = leb(imports, s)[1];
        if (flags & 1) at = leb(imports, at)[1];
      } else if (kind === 2) {
        const [flags, s] = leb(imports, at);
        at = leb(imports, s)[1];
        if (flags & 1) at = leb(imports, at)[1];
      } else {
        at += 2;
      }
    }
  }
  const bodies = [];
  const code = section(10);
  let [count, at] = leb(code, 0);
  for (let i = 0; i < count; i++) {
    const [size, s] = leb(code, at);
    bodies.push(code.subarray(s, s + size));
    at = s + size;
  }
  const names = new Map();
  const nameSection = section(0, "name");
  if (!nameSection) {
    console.error("the built wasm has no name section: build with KEEP_WASM_NAMES=1 npm run build");
    process.exit(1);
  }
  {
    let p = leb(nameSection, 0);
    p = p[1] + p[0];
    while (p < nameSection.length) {
      const sub = nameSection[p];
      const [size, s] = leb(nameSection, p + 1);
      if (sub === 1) {
        let [n, q] = leb(nameSection, s);
        for (let i = 0; i < n; i++) {
          const [index, r] = leb(nameSection, q);
          const [len, t] = leb(nameSection, r);
          names.set(index, nameSection.subarray(t, t + len).toString("utf8"));
          q = t + len;
        }
      }
      p = s + size;
    }
  }
  return { sections, bodies, imported, names };
}

/** The crate of a function from its (demangled) name: the first component of its path. */
function crateOf(name) {
  if (!name || name === "undefined") return "(unnamed)";
  // wasm-bindgen's generated adapters are named after their conversion, e.g. "U64 -> Externref".
  if (name.includes(" -> ")) return "(wasm-bindgen adapters)";
  // An async entry point's future, with the worker's own async code inlined into it.
  if (name.startsWith("js_sys::futures::future_to_promise::")) return "(async handlers, inlined)";
  // `<T as Trait>::f` and `<impl Trait for T>`: the crate of T.
  const path = name.replace(/^<(impl [^ ]+ for )?/, "").replace(/^_::/, "");
  const first = path.split("::")[0].replace(/\[[0-9a-f]+\]$/, "");
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(first) ? first : "(other)";
}

const gz = (parts) => gzipSync(Buffer.concat(parts)).length;
const fmt = (bytes) => (bytes / KiB).toFixed(1);

const report = {};
for (const crate of ["upload-worker", "tagger-worker"]) {
  const file = path.join(ROOT, "crates", crate, "build", "index_bg.wasm");
  const bytes = readFileSync(file);
  const { sections, bodies, imported, names } = parse(bytes);
  const byCrate = new Map();
  bodies.forEach((body, i) => {
    const c = crateOf(names.get(imported + i));
    const entry = byCrate.get(c) ?? { bytes: 0, parts: [] };
    entry.bytes += body.length;
    entry.parts.push(body);
    byCrate.set(c, entry);
  });
  const rows = [...byCrate.entries()]
    .map(([c, e]) => ({ crate: c, functions: e.parts.length, kib: e.bytes / KiB, gzipKiB: gz(e.parts) / KiB }))
    .sort((a, b) => b.kib - a.kib);
  const nameSection = sections.find((s) => s.id === 0 && s.name === "name");
  const data = sections.find((s) => s.id === 11);
  report[crate] = {
    wasmKiB: bytes.length / KiB,
    wasmGzipKiB: gz([bytes]) / KiB,
    codeKiB: bodies.reduce((n, b) => n + b.length, 0) / KiB,
    dataKiB: (data?.size ?? 0) / KiB,
    dataGzipKiB: data ? gz([data.bytes]) / KiB : 0,
    nameSectionKiB: (nameSection?.size ?? 0) / KiB,
    nameSectionGzipKiB: nameSection ? gz([nameSection.bytes]) / KiB : 0,
    crates: rows,
  };
  const r = report[crate];
  console.log(
    `\n${crate}: wasm ${fmt(bytes.length)} KiB (gzip ${r.wasmGzipKiB.toFixed(1)}); code ${r.codeKiB.toFixed(1)} KiB, ` +
      `data ${r.dataKiB.toFixed(1)} KiB (gzip ${r.dataGzipKiB.toFixed(1)}), name section ${r.nameSectionKiB.toFixed(1)} KiB ` +
      `(gzip ${r.nameSectionGzipKiB.toFixed(1)})`,
  );
  console.log("| crate | functions | code KiB | gzip KiB alone |\n|---|---:|---:|---:|");
  for (const row of rows.slice(0, top)) {
    console.log(`| ${row.crate} | ${row.functions} | ${row.kib.toFixed(1)} | ${row.gzipKiB.toFixed(1)} |`);
  }
}

// What the tagger has that the upload worker has not, by crate.
const upload = new Map(report["upload-worker"].crates.map((r) => [r.crate, r]));
console.log("\nTagger minus upload worker, by crate (code KiB / gzip KiB alone):");
for (const row of report["tagger-worker"].crates) {
  const other = upload.get(row.crate);
  const d = row.kib - (other?.kib ?? 0);
  if (Math.abs(d) >= 4) {
    console.log(`  ${row.crate}: +${d.toFixed(1)} KiB / +${(row.gzipKiB - (other?.gzipKiB ?? 0)).toFixed(1)} KiB${other ? "" : " (tagger only)"}`);
  }
}
