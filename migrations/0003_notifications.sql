-- Webhooks: where to tell a client that its image is done, and the outbox of events to
-- deliver there. Times are milliseconds since the Unix epoch (UTC).

-- The callback URL of an upload (the Callback-Url header, else WEBHOOK_URL), checked and in
-- normal form; NULL: no webhook.
ALTER TABLE images ADD COLUMN callback_url TEXT;

-- One row per event to deliver, written in the same D1 batch as the image's transition to
-- done or failed, so that a crash between the two can lose nothing. The row is also the
-- delivery record that GET /images/{id} shows as `notification`.
CREATE TABLE notifications (
  event_id        TEXT PRIMARY KEY NOT NULL,   -- the webhook-id, stable across retries
  image_id        TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
  type            TEXT NOT NULL CHECK (type IN ('image.tagged', 'image.failed')),
  url             TEXT NOT NULL,               -- copied from images.callback_url
  payload         TEXT NOT NULL,               -- the JSON body, sent as is on every attempt
  state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
  created_at      INTEGER NOT NULL,            -- the event: start of the give-up horizon
  due_at          INTEGER,                     -- pending: when the next attempt is expected
  lease_until     INTEGER,                     -- a delivery is attempting it until then
  attempts        INTEGER NOT NULL DEFAULT 0,
  last_status     INTEGER,                     -- HTTP status of the last answer
  last_error      TEXT,                        -- why the last attempt did not deliver
  last_attempt_at INTEGER,
  delivered_at    INTEGER,
  updated_at      INTEGER NOT NULL
);

-- An image's latest event, for GET /images/{id}.
CREATE INDEX notifications_by_image ON notifications (image_id, created_at DESC);
-- The reconciler's scan of overdue deliveries.
CREATE INDEX notifications_due ON notifications (due_at) WHERE state = 'pending';
