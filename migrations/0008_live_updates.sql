-- Live updates (issue 24): a client that reconnects gets the events it missed, rebuilt from
-- its images changed since then (bounded by a window and a limit). This index makes that
-- read walk only the owner's recently changed rows.
CREATE INDEX images_by_owner_updated ON images (owner, updated_at);
