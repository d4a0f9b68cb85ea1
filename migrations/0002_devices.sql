-- Device registry. A device id is unique across accounts: it is the MQTT client id and
-- user name at CONNECT, and the account is looked up from it.
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  password_hash TEXT NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS devices_account_id ON devices (account_id, device_id);
