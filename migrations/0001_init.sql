-- Device registry (filled by the identity milestone). Kept so that local and remote
-- databases share one migration history from the start.
CREATE TABLE IF NOT EXISTS schema_info (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
INSERT OR IGNORE INTO schema_info (key, value) VALUES ('created_by', 'edge-mqtt-broker');
