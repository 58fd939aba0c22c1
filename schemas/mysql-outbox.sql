-- Outbox table for MySQL 8.0 / 8.4, with the grants binlog-outbox needs.
-- Column names are Debezium's outbox defaults, so Debezium outbox users keep their tables.
--
-- Server settings (my.cnf, [mysqld]); MySQL 8 defaults shown where they already fit:
--   log_bin                              (default ON)
--   binlog_format        = ROW           (default)
--   binlog_row_image     = FULL          (default)
--   binlog_row_metadata  = FULL          (default MINIMAL: set it, for column names)
--   server_id            = 1             (unique; the connector uses its own source.server_id)
--   gtid_mode = ON, enforce_gtid_consistency = ON   (recommended)

CREATE DATABASE IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS shop.outbox (
    -- The event id, used as Nats-Msg-Id (JetStream dedup). Must be unique per stream;
    -- BINARY(16) UUIDs (e.g. UUID_TO_BIN(UUID())) are published in canonical string form.
    id            BINARY(16)   NOT NULL PRIMARY KEY,
    aggregatetype VARCHAR(255) NOT NULL,
    aggregateid   VARCHAR(255) NOT NULL,
    type          VARCHAR(255) NOT NULL,
    -- MySQL stores JSON in binary form; the connector publishes it as JSON text.
    payload       JSON         NOT NULL,
    created_at    TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB;

-- The connector's user. caching_sha2_password (the MySQL 8 default) is supported.
CREATE USER IF NOT EXISTS 'cdc'@'%' IDENTIFIED BY 'change-me';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%';
GRANT SELECT ON shop.outbox TO 'cdc'@'%';
