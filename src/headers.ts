/**
 * Header names between the Worker and the connection object, and those a trusted TCP
 * bridge sets (bridge/). The Worker sets the first group on every upgrade it forwards, after
 * dropping any the client sent, so the connection object can trust them.
 */

/** The client's address, as the Worker decided it (edge address or the bridge's). */
export const ADDR_HEADER = "x-mqtt-client-addr";
/** "tcp" when the client came through the trusted bridge, else "ws". */
export const TRANSPORT_HEADER = "x-mqtt-transport";
/** The WebSocket subprotocol the Worker chose, echoed in the 101 answer. */
export const SUBPROTOCOL_HEADER = "x-mqtt-subprotocol";
/** The bridge's shared secret (`BRIDGE_TOKEN`): only with it is the address below believed. */
export const BRIDGE_TOKEN_HEADER = "x-bridge-token";
/** The device's address, as the bridge saw it. */
export const BRIDGE_ADDR_HEADER = "x-bridge-client-addr";
