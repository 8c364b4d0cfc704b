-- The back-office schema of posfast before issue 16 (text fields as BLOB / bytea), as
-- posfast.sync.backoffice.schema_statements wrote it at commit 01c189d: what the migration test
-- builds an old back office with.
CREATE TABLE IF NOT EXISTS journals (
  journal_id TEXT PRIMARY KEY,
  anchor_seq INTEGER NOT NULL,
  high_seq INTEGER NOT NULL,
  last_link BLOB NOT NULL,
  records INTEGER NOT NULL,
  first_synced_us INTEGER NOT NULL,
  last_synced_us INTEGER NOT NULL,
  day_offset_min INTEGER,
  day_start_min INTEGER,
  day_tz TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS records (
  journal_id TEXT NOT NULL,
  "seq" INTEGER NOT NULL,
  "ts" INTEGER NOT NULL,
  "amount" INTEGER NOT NULL,
  "txn_id" INTEGER NOT NULL,
  "ref_seq" INTEGER NOT NULL,
  "day" INTEGER NOT NULL,
  "terminal" INTEGER NOT NULL,
  "receipt_no" INTEGER NOT NULL,
  "operator" INTEGER NOT NULL,
  "currency" INTEGER NOT NULL,
  "kind" INTEGER NOT NULL,
  "state" INTEGER NOT NULL,
  "method" INTEGER NOT NULL,
  "flags" INTEGER NOT NULL,
  "pan_last4" BLOB NOT NULL,
  "auth_code" BLOB NOT NULL,
  "rrn" BLOB NOT NULL,
  "client_ref" BLOB NOT NULL,
  "payload_len" INTEGER NOT NULL,
  "ext_len" INTEGER NOT NULL,
  "channel" BLOB NOT NULL,
  payload BLOB NOT NULL,
  link BLOB NOT NULL,
  order_ref TEXT NOT NULL DEFAULT '',
  host_ref TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (journal_id, seq));
CREATE INDEX IF NOT EXISTS records_day_terminal ON records (day, terminal);
CREATE TABLE IF NOT EXISTS sync_refusals (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_us INTEGER NOT NULL,
  journal_id TEXT,
  reason TEXT NOT NULL,
  first_seq INTEGER,
  last_seq INTEGER,
  message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sync_refusals_journal_at ON sync_refusals (journal_id, at_us);
CREATE TABLE IF NOT EXISTS registry (
  journal_id TEXT PRIMARY KEY,
  merchant_id TEXT NOT NULL DEFAULT '',
  store TEXT NOT NULL DEFAULT '',
  till TEXT NOT NULL DEFAULT '',
  tid TEXT NOT NULL DEFAULT '',
  device_serial TEXT NOT NULL DEFAULT '',
  registered_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS registry_store ON registry (store);
