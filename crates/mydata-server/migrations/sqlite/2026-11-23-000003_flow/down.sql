ALTER TABLE transactions DROP COLUMN last_activity;
ALTER TABLE transactions DROP COLUMN return_url;
