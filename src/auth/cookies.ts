/**
 * Cookie names of the browser flow (Xively seed): the page's JWT travels in `mqtt_token`
 * (HttpOnly, set by the application's own login), and the CSRF token in `mqtt_csrf` is
 * also sent as the MQTT password, proving the page can read its own origin's cookies.
 */
export const TOKEN_COOKIE = "mqtt_token";
export const CSRF_COOKIE = "mqtt_csrf";
