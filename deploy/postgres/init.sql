-- One database per central service: each owns its tables, and each is backed up and restored on its own.
CREATE DATABASE registry;
CREATE DATABASE approvals;
CREATE DATABASE aggregator;
CREATE DATABASE console;
