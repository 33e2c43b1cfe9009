-- No paying twice (issue 23): each image's content hash, and which image a reused result
-- came from.

-- SHA-256 of the stored bytes, lower-case hex; recorded by the tagger once it has read them.
ALTER TABLE images ADD COLUMN content_hash TEXT;
-- The lease under which the hash was recorded (its `lease_until` then): while that lease is
-- live, a delivery holding it is past its look-up and about to call the model.
ALTER TABLE images ADD COLUMN hash_lease INTEGER;
-- Done by reusing the labels of this earlier image of the same owner, with no AI call.
ALTER TABLE images ADD COLUMN reused_from TEXT;

-- The tagger's look-up of an owner's earlier image with the same bytes: done, or queued
-- under a live lease. Index-only: every column it reads is in the index.
CREATE INDEX images_by_content ON images
  (owner, content_hash, status, lease_until, hash_lease, id)
  WHERE content_hash IS NOT NULL;

-- The AI calls saved (GET /admin/usage counts this partial index, not the table).
CREATE INDEX images_reused ON images (reused_from) WHERE reused_from IS NOT NULL;
