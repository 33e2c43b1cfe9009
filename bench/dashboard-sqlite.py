#!/usr/bin/env python3
"""The dashboard's statements alone, natively in SQLite: no worker, no D1 layer, no proxy.

The same migrations (migrations/*.sql) and the same statements (local/contract.json,
generated from crates/shared/src/storage/dashboard.rs), on the data shape of
bench/dashboard.mjs: images uploaded evenly over the last DAYS days, 94% done (3% of those
reused), 5% failed under six codes, 1% queued, one in five with a webhook event. The table
is in memory; the triggers count the images into upload_hours as they are inserted.

    python3 bench/dashboard-sqlite.py [--images 1000000] [--days 7] [--samples 200]

Prints a table and writes bench/dashboard-sqlite-results.json (BENCHMARKS.md, "Operator
dashboard", is generated from it by bench/tables.mjs).
"""

import argparse
import json
import os
import random
import sqlite3
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY_MS = 86_400_000
CODES = ["invalid_image", "retries_exhausted", "object_missing", "image_too_large", "ai_misconfigured", "timed_out"]
NAMES = ["uploads per hour", "time to done", "failures by code", "queued backlog", "AI calls today", "webhook deliveries", "top tags"]
# The contract's parameters are of a window ending at this instant (dashboard_statements()).
CONTRACT_NOW = 1_796_000_000_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()

    contract = json.loads((ROOT / "local/contract.json").read_text())
    statements = contract["sql"]["dashboard"]
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA foreign_keys = ON")
    for f in sorted((ROOT / "migrations").glob("*.sql")):
        db.executescript(f.read_text())

    rng = random.Random(20261206)
    now = CONTRACT_NOW
    start = now - args.days * DAY_MS
    t0 = time.perf_counter()
    images, events, previous = [], [], None
    insert = (
        "INSERT INTO images (id, status, r2_key, content_type, size, uploaded_at, updated_at, tags, labels, model, "
        "min_score, processed_at, error_code, reused_from, callback_url) "
        "VALUES (?1, ?2, 'k', 'image/jpeg', 1, ?3, ?3, '[]', '[]', 'm', 0.8, ?4, ?5, ?6, ?7)"
    )
    event = (
        "INSERT INTO notifications (event_id, image_id, type, url, payload, state, created_at, attempts, updated_at) "
        "VALUES ('evt_' || ?1, ?1, 'image.tagged', 'https://hooks.example.com/in', '{}', ?2, ?3, ?4, ?3)"
    )
    for k in range(args.images):
        id_ = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        uploaded = start + (k * args.days * DAY_MS) // args.images
        roll = rng.random()
        status = "done" if roll < 0.94 else "failed" if roll < 0.99 else "queued"
        processed = None if status == "queued" else min(now, uploaded + int(1000 + 59_000 * rng.random() ** 3))
        code = CODES[int(rng.random() ** 2 * len(CODES))] if status == "failed" else None
        reused = previous if status == "done" and previous and rng.random() < 0.03 else None
        webhook = status != "queued" and rng.random() < 0.2
        images.append((id_, status, uploaded, processed, code, reused, "https://hooks.example.com/in" if webhook else None))
        if webhook:
            w = rng.random()
            state, attempts = ("delivered", 1) if w < 0.9 else ("pending", 3) if w < 0.93 else ("pending", 0) if w < 0.95 else ("failed", 9)
            events.append((id_, state, processed, attempts))
        if status == "done":
            previous = id_
        if len(images) >= 10_000:
            db.executemany(insert, images)
            db.executemany(event, events)
            images, events = [], []
    db.executemany(insert, images)
    db.executemany(event, events)
    tags = [(f"tag {k + 1}", max(1, round(args.images * 3 * 0.134 / (k + 1)))) for k in range(1000)]
    db.executemany("INSERT INTO tag_counts (tag, count) VALUES (?, ?)", tags)
    db.commit()
    seed_s = time.perf_counter() - t0
    in_window = db.execute("SELECT count(*) FROM images WHERE uploaded_at >= ?", (now - DAY_MS,)).fetchone()[0]
    print(f"seeded {args.images:,} images ({in_window:,} in the last 24 h) in {seed_s:.1f} s; SQLite {sqlite3.sqlite_version}")

    results = []
    for name, st in zip(NAMES, statements):
        plan = [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {st['sql']}", st["params"])]
        ms = []
        for i in range(5 + args.samples):
            t = time.perf_counter()
            db.execute(st["sql"], st["params"]).fetchall()
            if i >= 5:
                ms.append((time.perf_counter() - t) * 1000)
        ms.sort()
        pick = lambda p: ms[min(len(ms) - 1, -(-len(ms) * p // 100) - 1)]
        results.append({"name": name, "plan": plan, "p50": pick(50), "p99": pick(99), "max": ms[-1]})
        print(f"{name:<20} p50 {pick(50):8.3f} ms   p99 {pick(99):8.3f} ms   {' | '.join(plan)}")

    out = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "images": args.images,
        "imagesInWindow": in_window,
        "days": args.days,
        "samples": args.samples,
        "sqlite": sqlite3.sqlite_version,
        "seedSeconds": seed_s,
        "loadAverage": {"atEnd": os.getloadavg()[0], "cores": os.cpu_count()},
        "results": results,
    }
    (ROOT / "bench/dashboard-sqlite-results.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
