-- The image_blobs -> images foreign key probed and share-locked the image for every
-- inserted blob row: ~40 ms of a ~290 ms page merge at 100,000 images, inside the
-- part of the merge that concurrent walks take in turn (the blobs rows' locks).
-- It guarded what the only writer keeps by construction: mirror.ingest.merge
-- writes an image and its blob rows in one transaction and deletes the blob rows
-- before the image (delete_images), under the image's row lock. Without the
-- cascade, SQL written by hand deletes an image's image_blobs rows first.
ALTER TABLE image_blobs DROP CONSTRAINT image_blobs_image_id_fkey;
