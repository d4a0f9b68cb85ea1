// Types of `edge-mqtt-broker/local` (local/index.mjs, which is checked against them by tsc).

/** What `startLocalBroker` takes; every field is optional. */
export interface LocalBrokerOptions {
  /** TCP port on 127.0.0.1; default: a free one. */
  port?: number;
  /**
   * A folder for the broker's state (Durable Objects, D1, the generated secrets), laid out like
   * `wrangler dev --persist-to <folder>`; a second start on it keeps retained messages,
   * persistent sessions and devices. Default: in memory, gone after `stop()`.
   */
  persistTo?: string;
  /**
   * Overrides of wrangler.toml's `[vars]` (`ANONYMOUS_ACCOUNT`, the limits, …) and of the
   * generated secrets (`ADMIN_TOKEN`, `JWT_SECRET`, `DEVICE_PEPPER`, `BRIDGE_TOKEN`, …).
   */
  vars?: Record<string, string>;
  /**
   * Receives the broker's log lines (one JSON object per line from the Worker, level
   * "log" | "info" | "warn" | "error" | "debug"; Miniflare's own warnings with level "miniflare").
   * Default: error lines and Miniflare's warnings go to stderr, the rest is dropped.
   */
  log?: (line: string, level: string) => void;
  /** Where the bundled Worker is cached; default: node_modules/.cache/edge-mqtt-broker in the package. */
  cacheDir?: string;
}

/** A device's credentials as the admin API returns them (the password is shown once). */
export interface LocalDeviceCredentials {
  accountId: string;
  deviceId: string;
  password: string;
}

/** ACL grants of a minted token: topic filters it may publish and subscribe to. */
export interface LocalTokenAcl {
  pub: string[];
  sub: string[];
}

export interface LocalMintOptions {
  /** Token lifetime; default 3600 s (the admin API's default). */
  ttlSeconds?: number;
  /** Grants; default: the admin API's (the whole account). */
  acl?: LocalTokenAcl;
}

/** A running local broker. */
export interface LocalBroker {
  /** MQTT over WebSocket: `ws://127.0.0.1:<port>/mqtt`. */
  url: string;
  /** HTTP base: `http://127.0.0.1:<port>` (admin API, publish API, /health, the console). */
  httpUrl: string;
  port: number;
  /** The admin API's bearer token. */
  adminToken: string;
  /** A JWT for `subject` in `account` (MQTT user name = subject, password = the token). */
  mintToken(account: string, subject: string, opts?: LocalMintOptions): Promise<string>;
  /** Registers a device (a random id unless given) and returns its credentials. */
  provisionDevice(account: string, deviceId?: string): Promise<LocalDeviceCredentials>;
  /** Stops the runtime and frees the port; state in `persistTo` stays. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts the broker in this process with Miniflare: the Worker bundled as `wrangler deploy`
 * bundles it (cached by content), its Durable Objects, D1 with migrations/ applied, the console,
 * wrangler.toml's vars and generated secrets, on 127.0.0.1.
 */
export declare function startLocalBroker(options?: LocalBrokerOptions): Promise<LocalBroker>;
