/**
 * The Prometheus text exposition (format 0.0.4) of GET /admin/v1/metrics: the routers'
 * counters and sizes, one series per account. Pure.
 */
import { DROP_REASONS, type CounterValues } from "../router/counters";

/** One account's figures as its router reports them (`TopicRouter.adminStats`). */
export interface AccountStats {
  accountId: string;
  counters: CounterValues;
  retained: { count: number; bytes: number; monitorEvents: number };
  subscriptions: number;
  sessions: { online: number; offline: number };
}

interface Family {
  name: string;
  type: "counter" | "gauge";
  help: string;
  samples: (s: AccountStats) => Array<[Record<string, string>, number]>;
}

const FAMILIES: Family[] = [
  { name: "mqtt_messages_in_total", type: "counter", help: "Messages published into the account's router (MQTT, HTTP, wills, monitoring events).", samples: (s) => [[{}, s.counters.messagesIn]] },
  { name: "mqtt_messages_out_total", type: "counter", help: "Copies handed to live connections, retained messages on subscribe included.", samples: (s) => [[{}, s.counters.messagesOut]] },
  { name: "mqtt_messages_unmatched_total", type: "counter", help: "Published messages no subscription matched.", samples: (s) => [[{}, s.counters.unmatched]] },
  {
    name: "mqtt_deliveries_total",
    type: "counter",
    help: "Copies routed to subscribers: online (to a live connection), queued (to a session object), retained (sent on subscribe).",
    samples: (s) => [
      [{ kind: "online" }, s.counters.deliveredOnline],
      [{ kind: "queued" }, s.counters.deliveredQueued],
      [{ kind: "retained" }, s.counters.retainedSent],
    ],
  },
  { name: "mqtt_drops_total", type: "counter", help: "Copies for subscribers that went nowhere, by reason.", samples: (s) => DROP_REASONS.map((reason) => [{ reason }, s.counters.drops[reason]]) },
  { name: "mqtt_publish_batches_total", type: "counter", help: "Publish batches routed (one router call each).", samples: (s) => [[{}, s.counters.batches]] },
  { name: "mqtt_connects_total", type: "counter", help: "Connections that attached to a session.", samples: (s) => [[{}, s.counters.connects]] },
  { name: "mqtt_disconnects_total", type: "counter", help: "Connections that ended.", samples: (s) => [[{}, s.counters.disconnects]] },
  { name: "mqtt_retained_messages", type: "gauge", help: "Retained messages stored ($SYS/mon events apart: the quota's count).", samples: (s) => [[{}, s.retained.count]] },
  { name: "mqtt_retained_bytes", type: "gauge", help: "Payload and topic bytes of those retained messages (the quota's bytes).", samples: (s) => [[{}, s.retained.bytes]] },
  { name: "mqtt_retained_monitor_events", type: "gauge", help: "Retained $SYS/mon events (bounded by MAX_MONITOR_RETAINED).", samples: (s) => [[{}, s.retained.monitorEvents]] },
  { name: "mqtt_subscriptions", type: "gauge", help: "Subscriptions (a shared group's filter counts once).", samples: (s) => [[{}, s.subscriptions]] },
  {
    name: "mqtt_sessions",
    type: "gauge",
    help: "Sessions with a live connection (online) and persistent sessions without one (offline).",
    samples: (s) => [
      [{ state: "online" }, s.sessions.online],
      [{ state: "offline" }, s.sessions.offline],
    ],
  },
  { name: "mqtt_counters_start_time_seconds", type: "gauge", help: "When the account's counters began (Unix time).", samples: (s) => [[{}, Math.floor(s.counters.since / 1000)]] },
];

/** `\`, `"` and newlines escaped, as the format requires in label values. */
function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return `{${parts.join(",")}}`;
}

/** The exposition of every family over `accounts`; `truncated` when more accounts exist than were reported. */
export function prometheusText(accounts: AccountStats[], opts: { truncated: boolean }): string {
  const lines: string[] = [];
  for (const f of FAMILIES) {
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of accounts) {
      for (const [l, value] of f.samples(s)) lines.push(`${f.name}${labels({ account: s.accountId, ...l })} ${value}`);
    }
  }
  lines.push(
    "# HELP mqtt_metrics_accounts Accounts reported in this scrape.",
    "# TYPE mqtt_metrics_accounts gauge",
    `mqtt_metrics_accounts ${accounts.length}`,
    "# HELP mqtt_metrics_accounts_truncated 1 when the registry knows more accounts than one scrape reports.",
    "# TYPE mqtt_metrics_accounts_truncated gauge",
    `mqtt_metrics_accounts_truncated ${opts.truncated ? 1 : 0}`,
  );
  return `${lines.join("\n")}\n`;
}
