-- The citizen flow (spec §5.3, D19, D21): the supplied returnUrl as given (compared when the
-- redirect is reloaded; cleared with the personal data) and the citizen's last request.
ALTER TABLE transactions ADD COLUMN return_url TEXT;
ALTER TABLE transactions ADD COLUMN last_activity BIGINT NOT NULL DEFAULT 0;
