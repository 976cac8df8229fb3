DROP TABLE transfers;
DROP TABLE transactions;
