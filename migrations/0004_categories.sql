-- Categories (issue 23): the WordNet categories a done image scored above min_score, as a
-- JSON array of {name, score}, best first. Their names go into image_tags beside the tags
-- (so GET /images?tag=dog and GET /tags see them, through the same index and counts).
ALTER TABLE images ADD COLUMN categories TEXT;
