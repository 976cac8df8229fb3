DROP TABLE transfers;
DROP TABLE transactions;
DROP TABLE tokens;
DROP TABLE sps;
DROP TABLE dps;
