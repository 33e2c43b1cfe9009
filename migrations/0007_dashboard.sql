-- The operator dashboard (issue 22, GET /admin/stats): each aggregate reads one bounded
-- range of a covering index, never the table. (Uploads per hour and the queued backlog
-- read `images_by_status`; the top tags `tag_counts_by_count`.)

-- Finished images by when they finished: time from upload to done, failures by code, and
-- today's model calls. Every column those read is in the index.
CREATE INDEX images_by_finish ON images
  (status, processed_at, uploaded_at, error_code, reused_from)
  WHERE processed_at IS NOT NULL;

-- Webhook events by when they were raised, with their delivery state and attempts.
CREATE INDEX notifications_by_creation ON notifications (created_at, state, attempts);
