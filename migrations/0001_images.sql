-- The system of record: one row per uploaded image, and the tag search index.
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE images (
  id            TEXT PRIMARY KEY NOT NULL,   -- lowercase v4 UUID
  status        TEXT NOT NULL CHECK (status IN ('queued', 'done', 'failed')),
  r2_key        TEXT NOT NULL,
  content_type  TEXT NOT NULL,
  size          INTEGER NOT NULL,
  uploaded_at   INTEGER NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 0,  -- deliveries that got to work on it
  due_at        INTEGER,                     -- queued: when the next attempt is expected
  lease_until   INTEGER,                     -- a tagger is working on it until then
  error_code    TEXT,                        -- failed: why
  error_message TEXT,
  tags          TEXT,                        -- done: JSON array of tag names, best first
  labels        TEXT,                        -- done: JSON array of {label, score}
  model         TEXT,
  min_score     REAL,
  processed_at  INTEGER,                     -- done or failed: when
  updated_at    INTEGER NOT NULL
);

-- Newest first, whole collection or by status.
CREATE INDEX images_by_upload ON images (uploaded_at DESC, id DESC);
CREATE INDEX images_by_status ON images (status, uploaded_at DESC, id DESC);
-- The reconciler's scan of overdue queued images.
CREATE INDEX images_due ON images (due_at) WHERE status = 'queued';

-- One row per (tag, image): tags in lower case, ordered for newest-first search.
CREATE TABLE image_tags (
  tag         TEXT NOT NULL,
  uploaded_at INTEGER NOT NULL,
  image_id    TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
  PRIMARY KEY (tag, uploaded_at, image_id)
) WITHOUT ROWID;
CREATE INDEX image_tags_by_image ON image_tags (image_id);

-- Idempotency-Key reservations, per caller.
CREATE TABLE idempotency_keys (
  scope       TEXT NOT NULL,     -- SHA-256 of the bearer token, or 'anonymous'
  key         TEXT NOT NULL,
  image_id    TEXT NOT NULL,
  body_sha256 TEXT,              -- NULL while the first request runs
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_image ON idempotency_keys (image_id);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
