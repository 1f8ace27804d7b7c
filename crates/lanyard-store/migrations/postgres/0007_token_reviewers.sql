-- Issue 11: entries whose identity may call the TokenReview endpoint.
ALTER TABLE entries ADD COLUMN token_reviewer BOOLEAN NOT NULL DEFAULT FALSE;
