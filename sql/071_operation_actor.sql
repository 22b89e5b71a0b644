-- Who asked for an API Delete (role, token id, request id, client address): kept with
-- the operation, because the index settles it later (when the upstream says it is
-- done) and its events name who asked.
ALTER TABLE operations ADD COLUMN actor json;
