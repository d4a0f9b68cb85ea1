/**
 * Data points for the optional Workers Analytics Engine binding `ANALYTICS` (docs/operations.md
 * has the SQL to query them). Pure: builds the points; the router writes them, one per publish
 * batch and one per connect or disconnect. Without the binding nothing is built.
 *
 * Layout (Analytics Engine has positional columns):
 * - index1: the account id (the sampling key: each account is sampled on its own)
 * - blob1: the event (`batch`, `connect`, `disconnect`); blob2: the account id; blob3: the client id (connect/disconnect)
 * - batch doubles: double1 messages in, double2 unmatched, double3 delivered online,
 *   double4 queued for offline sessions, double5 dropped, double6 payload bytes in
 * - connect/disconnect doubles: double1 = 1
 */

/** One `writeDataPoint` argument (a subset of `AnalyticsEngineDataPoint`). */
export interface AnalyticsPoint {
  indexes: string[];
  blobs: string[];
  doubles: number[];
}

export interface BatchFigures {
  messages: number;
  unmatched: number;
  deliveredOnline: number;
  deliveredQueued: number;
  dropped: number;
  bytes: number;
}

export function batchPoint(account: string, f: BatchFigures): AnalyticsPoint {
  return {
    indexes: [account],
    blobs: ["batch", account],
    doubles: [f.messages, f.unmatched, f.deliveredOnline, f.deliveredQueued, f.dropped, f.bytes],
  };
}

export function connectionPoint(event: "connect" | "disconnect", account: string, clientId: string): AnalyticsPoint {
  return { indexes: [account], blobs: [event, account, clientId], doubles: [1] };
}
