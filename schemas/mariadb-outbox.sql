-- Outbox table for MariaDB 10.5+ (tested with 10.11), with the grants binlog-outbox needs.
-- Column names are Debezium's outbox defaults, so Debezium outbox users keep their tables.
--
-- Server settings (my.cnf, [mariadbd]):
--   log_bin              = mariadb-bin
--   binlog_format        = ROW
--   binlog_row_image     = FULL
--   binlog_row_metadata  = FULL      -- column names in every TABLE_MAP
--   server_id            = 1         -- unique; the connector uses its own source.server_id
--   log_bin_compress     = OFF       -- compressed row events cannot be read

CREATE DATABASE IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS shop.outbox (
    -- The event id, used as Nats-Msg-Id (JetStream dedup). Must be unique per stream;
    -- a UUID stored as BINARY(16) is published as its canonical string form.
    id            BINARY(16)   NOT NULL PRIMARY KEY,
    -- Routes the event: subject "outbox.event.{aggregatetype}" by default.
    -- Must be a valid NATS subject token: no spaces, '.', '*' or '>'.
    aggregatetype VARCHAR(255) NOT NULL,
    aggregateid   VARCHAR(255) NOT NULL,
    type          VARCHAR(255) NOT NULL,
    -- Published as the message body, byte for byte (MariaDB stores JSON as text).
    payload       JSON         NOT NULL,
    created_at    TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB;

-- The connector's user: read the binlog, read binlog status, see the outbox table.
CREATE USER IF NOT EXISTS 'cdc'@'%' IDENTIFIED BY 'change-me';
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'cdc'@'%';
GRANT SELECT ON shop.outbox TO 'cdc'@'%';

-- Applications insert in the same transaction as their state change, e.g.:
--   START TRANSACTION;
--   INSERT INTO shop.users (...) VALUES (...);
--   INSERT INTO shop.outbox (id, aggregatetype, aggregateid, type, payload)
--   VALUES (UNHEX(REPLACE(UUID(), '-', '')), 'User', '42', 'UserCreated', '{"name": "Ada"}');
--   COMMIT;
-- Rows may be deleted after they are published (or right away, in the same transaction):
-- the connector reads the INSERT from the binlog, not the table.
