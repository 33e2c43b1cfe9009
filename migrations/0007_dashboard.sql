-- The operator dashboard (issue 22, GET /admin/stats): each aggregate reads a small table
-- kept by triggers, or one bounded range (a time window, a LIMIT) of a covering index, never
-- a scan of a table. (The queued backlog reads `images_by_status`; the top tags
-- `tag_counts_by_count`.)

-- Uploads per hour of upload and status now, kept by triggers on images (as tag_counts is
-- on image_tags), so that the chart reads at most 72 rows whatever the upload rate.
CREATE TABLE upload_hours (
  hour   INTEGER NOT NULL,   -- uploaded_at / 3600000: hours since the epoch
  status TEXT NOT NULL,      -- as images.status
  count  INTEGER NOT NULL,   -- images of this hour in this status; rows at 0 are removed
  PRIMARY KEY (hour, status)
) WITHOUT ROWID;

-- Images recorded before this migration.
INSERT INTO upload_hours (hour, status, count)
  SELECT uploaded_at / 3600000, status, count(*) FROM images GROUP BY 1, 2;

CREATE TRIGGER images_hour_counted AFTER INSERT ON images
BEGIN
  INSERT INTO upload_hours (hour, status, count) VALUES (NEW.uploaded_at / 3600000, NEW.status, 1)
    ON CONFLICT (hour, status) DO UPDATE SET count = count + 1;
END;

-- A transition (queued to done or failed, a redrive back to queued) moves the image.
CREATE TRIGGER images_hour_moved AFTER UPDATE OF status, uploaded_at ON images
  WHEN OLD.status IS NOT NEW.status OR OLD.uploaded_at IS NOT NEW.uploaded_at
BEGIN
  UPDATE upload_hours SET count = count - 1
    WHERE hour = OLD.uploaded_at / 3600000 AND status = OLD.status;
  DELETE FROM upload_hours
    WHERE hour = OLD.uploaded_at / 3600000 AND status = OLD.status AND count <= 0;
  INSERT INTO upload_hours (hour, status, count) VALUES (NEW.uploaded_at / 3600000, NEW.status, 1)
    ON CONFLICT (hour, status) DO UPDATE SET count = count + 1;
END;

-- A delete (DELETE /images/{id}, retention, an upload undone) uncounts it.
CREATE TRIGGER images_hour_uncounted AFTER DELETE ON images
BEGIN
  UPDATE upload_hours SET count = count - 1
    WHERE hour = OLD.uploaded_at / 3600000 AND status = OLD.status;
  DELETE FROM upload_hours
    WHERE hour = OLD.uploaded_at / 3600000 AND status = OLD.status AND count <= 0;
END;

-- Finished images by when they finished: time from upload to done, failures by code, and
-- today's model calls. Every column those read is in the index.
CREATE INDEX images_by_finish ON images
  (status, processed_at, uploaded_at, error_code, reused_from)
  WHERE processed_at IS NOT NULL;

-- Webhook events by when they were raised, with their delivery state and attempts.
CREATE INDEX notifications_by_creation ON notifications (created_at, state, attempts);
