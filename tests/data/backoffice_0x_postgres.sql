-- The back-office schema of posfast before issue 16 (text fields as BLOB / bytea), as
-- posfast.sync.backoffice.schema_statements wrote it at commit 01c189d: what the migration test
-- builds an old back office with.
CREATE TABLE IF NOT EXISTS journals (
  journal_id uuid PRIMARY KEY,
  anchor_seq bigint NOT NULL,
  high_seq bigint NOT NULL,
  last_link bytea NOT NULL,
  records bigint NOT NULL,
  first_synced_us bigint NOT NULL,
  last_synced_us bigint NOT NULL,
  day_offset_min bigint,
  day_start_min bigint,
  day_tz TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS records (
  journal_id uuid NOT NULL,
  "seq" bigint NOT NULL,
  "ts" bigint NOT NULL,
  "amount" bigint NOT NULL,
  "txn_id" bigint NOT NULL,
  "ref_seq" bigint NOT NULL,
  "day" integer NOT NULL,
  "terminal" bigint NOT NULL,
  "receipt_no" bigint NOT NULL,
  "operator" bigint NOT NULL,
  "currency" integer NOT NULL,
  "kind" smallint NOT NULL,
  "state" smallint NOT NULL,
  "method" smallint NOT NULL,
  "flags" smallint NOT NULL,
  "pan_last4" bytea NOT NULL,
  "auth_code" bytea NOT NULL,
  "rrn" bytea NOT NULL,
  "client_ref" bytea NOT NULL,
  "payload_len" integer NOT NULL,
  "ext_len" smallint NOT NULL,
  "channel" bytea NOT NULL,
  payload bytea NOT NULL,
  link bytea NOT NULL,
  order_ref TEXT NOT NULL DEFAULT '',
  host_ref TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (journal_id, seq));
CREATE INDEX IF NOT EXISTS records_day_terminal ON records (day, terminal);
CREATE TABLE IF NOT EXISTS sync_refusals (
  id bigserial PRIMARY KEY,
  at_us bigint NOT NULL,
  journal_id TEXT,
  reason TEXT NOT NULL,
  first_seq bigint,
  last_seq bigint,
  message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sync_refusals_journal_at ON sync_refusals (journal_id, at_us);
CREATE TABLE IF NOT EXISTS registry (
  journal_id uuid PRIMARY KEY,
  merchant_id TEXT NOT NULL DEFAULT '',
  store TEXT NOT NULL DEFAULT '',
  till TEXT NOT NULL DEFAULT '',
  tid TEXT NOT NULL DEFAULT '',
  device_serial TEXT NOT NULL DEFAULT '',
  registered_us bigint NOT NULL);
CREATE INDEX IF NOT EXISTS registry_store ON registry (store);
