/**
 * One table of every code the broker answers with: MQTT 3.1.1 CONNACK return codes,
 * SUBACK failure, and the causes for which the broker ends a connection, each with its
 * monitoring close code (IBM Watson IoT table, SPEC "Monitoring") and MQTT 5 reason code.
 */

/** MQTT 3.1.1 CONNACK return codes [MQTT-3.2.2.3]. */
export const ConnackCode = {
  Accepted: 0,
  UnacceptableProtocolVersion: 1,
  IdentifierRejected: 2,
  ServerUnavailable: 3,
  BadUserNameOrPassword: 4,
  NotAuthorized: 5,
} as const;
export type ConnackCode = (typeof ConnackCode)[keyof typeof ConnackCode];

/** SUBACK return code for a refused filter [MQTT-3.9.3]. */
export const SUBACK_FAILURE = 0x80;

export interface CloseCauseInfo {
  /** Monitoring close code ($SYS/mon Disconnect events). */
  monitorCode: number;
  /**
   * MQTT 5 DISCONNECT reason code sent before the close (when the client speaks 5.0). An
   * error code (>= 0x80) marks a close the broker decides; 0x00/0x04 are the client's own ends.
   */
  v5Reason: number;
  /** WebSocket close code used on the socket. */
  wsCode: number;
  /** Whether the last will is published [MQTT-3.1.2-8]: every end but a DISCONNECT. */
  publishWill: boolean;
  reason: string;
}

export const CLOSE_CAUSES = {
  clientDisconnect: { monitorCode: 0, v5Reason: 0x00, wsCode: 1000, publishWill: false, reason: "client sent DISCONNECT" },
  clientDisconnectWithWill: { monitorCode: 0, v5Reason: 0x04, wsCode: 1000, publishWill: true, reason: "client sent DISCONNECT with will message" },
  clientClosed: { monitorCode: 91, v5Reason: 0x00, wsCode: 1000, publishWill: true, reason: "connection closed by client" },
  networkLost: { monitorCode: 91, v5Reason: 0x00, wsCode: 1006, publishWill: true, reason: "connection lost" },
  serverClosed: { monitorCode: 92, v5Reason: 0x8b, wsCode: 1001, publishWill: true, reason: "closed by server" },
  keepAliveTimeout: { monitorCode: 160, v5Reason: 0x8d, wsCode: 1000, publishWill: true, reason: "keep alive timeout" },
  notAuthorized: { monitorCode: 180, v5Reason: 0x87, wsCode: 1008, publishWill: true, reason: "not authorized" },
  tooLarge: { monitorCode: 287, v5Reason: 0x95, wsCode: 1009, publishWill: true, reason: "message too large" },
  takenOver: { monitorCode: 288, v5Reason: 0x8e, wsCode: 1000, publishWill: true, reason: "client id reused by a new connection" },
  adminKick: { monitorCode: 94, v5Reason: 0x98, wsCode: 1000, publishWill: true, reason: "disconnected by an administrator" },
  invalidData: { monitorCode: 105, v5Reason: 0x81, wsCode: 1002, publishWill: true, reason: "invalid data" },
  protocolError: { monitorCode: 105, v5Reason: 0x82, wsCode: 1002, publishWill: true, reason: "protocol error" },
  tooManySubscriptions: { monitorCode: 154, v5Reason: 0x97, wsCode: 1008, publishWill: true, reason: "too many subscriptions" },
  invalidClientId: { monitorCode: 166, v5Reason: 0x85, wsCode: 1008, publishWill: true, reason: "invalid client id" },
  tooManyConnections: { monitorCode: 173, v5Reason: 0x97, wsCode: 1008, publishWill: true, reason: "too many connections" },
  invalidTopic: { monitorCode: 276, v5Reason: 0x90, wsCode: 1008, publishWill: true, reason: "invalid topic" },
  topicAliasInvalid: { monitorCode: 105, v5Reason: 0x94, wsCode: 1002, publishWill: true, reason: "topic alias invalid" },
  receiveMaximumExceeded: { monitorCode: 105, v5Reason: 0x93, wsCode: 1002, publishWill: true, reason: "receive maximum exceeded" },
  connectRateExceeded: { monitorCode: 92, v5Reason: 0x9f, wsCode: 1008, publishWill: true, reason: "connection rate exceeded" },
  rateExceeded: { monitorCode: 92, v5Reason: 0x96, wsCode: 1008, publishWill: true, reason: "message rate too high" },
  serverError: { monitorCode: 92, v5Reason: 0x83, wsCode: 1011, publishWill: true, reason: "internal error" },
} as const satisfies Record<string, CloseCauseInfo>;

export type CloseCause = keyof typeof CLOSE_CAUSES;

/** 3.1.1 CONNACK return code → MQTT 5 CONNACK reason code [MQTT-3.2.2.2]. */
export const CONNACK_V5: Record<ConnackCode, number> = {
  [ConnackCode.Accepted]: 0x00,
  [ConnackCode.UnacceptableProtocolVersion]: 0x84,
  [ConnackCode.IdentifierRejected]: 0x85,
  [ConnackCode.ServerUnavailable]: 0x88,
  [ConnackCode.BadUserNameOrPassword]: 0x86,
  [ConnackCode.NotAuthorized]: 0x87,
};

/** MQTT 5 reason codes the broker puts in acknowledgements (PUBACK, PUBREC, PUBREL, SUBACK, UNSUBACK, CONNACK) [MQTT-2.4]. */
export const V5 = {
  success: 0x00,
  noMatchingSubscribers: 0x10,
  noSubscriptionExisted: 0x11,
  unspecified: 0x80,
  protocolError: 0x82,
  notAuthorized: 0x87,
  badAuthenticationMethod: 0x8c,
  topicFilterInvalid: 0x8f,
  packetIdInUse: 0x91,
  packetIdNotFound: 0x92,
  receiveMaximumExceeded: 0x93,
  topicAliasInvalid: 0x94,
  quotaExceeded: 0x97,
  payloadFormatInvalid: 0x99,
  connectionRateExceeded: 0x9f,
} as const;

/** The SUBACK failure code: 3.1.1 has one; MQTT 5 says why. */
export function subackFailure(version: 3 | 4 | 5, v5code: number): number {
  return version === 5 ? v5code : SUBACK_FAILURE;
}
