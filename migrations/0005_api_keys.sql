-- API keys (issue 20): client keys made by the operator, who owns each image, per-owner tag
-- counts and daily upload counts. Times are milliseconds since the Unix epoch (UTC).

-- Client keys. The secret key is shown once, when made; only its SHA-256 is kept.
CREATE TABLE api_keys (
  key_id        TEXT PRIMARY KEY NOT NULL,   -- 'key_' + 20 hex digits: public, the owner id
  key_hash      TEXT NOT NULL UNIQUE,        -- SHA-256 of the secret key, lower-case hex
  name          TEXT NOT NULL,
  scopes        TEXT NOT NULL,               -- names, space-separated ('images:read ...')
  daily_uploads INTEGER,                     -- most uploads per UTC day; NULL: no quota
  created_at    INTEGER NOT NULL,
  revoked_at    INTEGER                      -- set once revoked: the key opens nothing
);
-- GET /admin/keys, oldest first.
CREATE INDEX api_keys_by_creation ON api_keys (created_at, key_id);

-- Uploads admitted per owner and UTC day (days since the epoch), for daily quotas.
CREATE TABLE key_usage (
  owner   TEXT NOT NULL,
  day     INTEGER NOT NULL,
  uploads INTEGER NOT NULL,
  PRIMARY KEY (owner, day)
) WITHOUT ROWID;

-- Who uploaded each image: a key id, 'operator' or 'anonymous'. Images from before keys
-- were uploaded without an owner: they are the anonymous client's (the operator sees all).
ALTER TABLE images ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous';
-- A client's images, newest first, whole or by status (the owner-filtered search).
CREATE INDEX images_by_owner ON images (owner, uploaded_at DESC, id DESC);
CREATE INDEX images_by_owner_status ON images (owner, status, uploaded_at DESC, id DESC);

-- The tag index carries the owner, so that a client's tag search walks only its own rows.
ALTER TABLE image_tags ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous';
CREATE INDEX image_tags_by_owner ON image_tags (owner, tag, uploaded_at, image_id);

-- Tag counts per owner, for a client's GET /tags and its search's rarest tag; kept by
-- triggers on image_tags like tag_counts (which stays the operator's, over all images).
CREATE TABLE owner_tag_counts (
  owner TEXT NOT NULL,
  tag   TEXT NOT NULL,
  count INTEGER NOT NULL,             -- rows of image_tags with this owner and tag; 0 is removed
  PRIMARY KEY (owner, tag)
) WITHOUT ROWID;
CREATE INDEX owner_tag_counts_by_count ON owner_tag_counts (owner, count DESC, tag);

-- Tags indexed before this migration.
INSERT INTO owner_tag_counts (owner, tag, count)
  SELECT owner, tag, count(*) FROM image_tags GROUP BY owner, tag;

CREATE TRIGGER image_tags_owner_counted AFTER INSERT ON image_tags
BEGIN
  INSERT INTO owner_tag_counts (owner, tag, count) VALUES (NEW.owner, NEW.tag, 1)
    ON CONFLICT (owner, tag) DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER image_tags_owner_uncounted AFTER DELETE ON image_tags
BEGIN
  UPDATE owner_tag_counts SET count = count - 1 WHERE owner = OLD.owner AND tag = OLD.tag;
  DELETE FROM owner_tag_counts WHERE owner = OLD.owner AND tag = OLD.tag AND count <= 0;
END;
