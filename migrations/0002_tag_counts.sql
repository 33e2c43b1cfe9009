-- Tag counts for GET /tags (a tag cloud), kept by triggers on image_tags so that reading
-- them costs O(distinct tags), never a scan of image_tags. Also the search's choice of
-- which tag to walk first: the rarest one.

CREATE TABLE tag_counts (
  tag   TEXT PRIMARY KEY NOT NULL,   -- lower case, as in image_tags
  count INTEGER NOT NULL             -- rows of image_tags with this tag; rows at 0 are removed
) WITHOUT ROWID;

-- Most used first.
CREATE INDEX tag_counts_by_count ON tag_counts (count DESC, tag);

-- Tags indexed before this migration.
INSERT INTO tag_counts (tag, count) SELECT tag, count(*) FROM image_tags GROUP BY tag;

-- INSERT OR IGNORE of a row that exists fires no trigger, so a repeated index is not counted.
CREATE TRIGGER image_tags_counted AFTER INSERT ON image_tags
BEGIN
  INSERT INTO tag_counts (tag, count) VALUES (NEW.tag, 1)
    ON CONFLICT (tag) DO UPDATE SET count = count + 1;
END;

-- Deleting an image's tags (its delete, retention, or the ON DELETE CASCADE) uncounts them.
CREATE TRIGGER image_tags_uncounted AFTER DELETE ON image_tags
BEGIN
  UPDATE tag_counts SET count = count - 1 WHERE tag = OLD.tag;
  DELETE FROM tag_counts WHERE tag = OLD.tag AND count <= 0;
END;
