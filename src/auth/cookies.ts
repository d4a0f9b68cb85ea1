/**
 * Cookie names of the browser flow (Xively seed): the page's JWT travels in `mqtt_token`
 * (HttpOnly, set by the application's own login), and the CSRF token in `mqtt_csrf` is
 * also sent as the MQTT password, proving the page can read its own origin's cookies.
 */
export const TOKEN_COOKIE = "mqtt_token";
export const CSRF_COOKIE = "mqtt_csrf";

/**
 * Value of cookie `name` in a `Cookie` request header (RFC 6265 `name=value; …`),
 * tolerant of extra whitespace, pairs without `=`, and a quoted value. The first
 * occurrence wins; `%`-escapes are decoded when well-formed.
 * @returns the value (possibly `""`), or `null` when absent.
 */
export function readCookie(header: string | null, name: string): string | null {
  if (header === null || name.length === 0) return null;
  const n = header.length;
  let start = 0;
  while (start < n) {
    let end = header.indexOf(";", start);
    if (end < 0) end = n;
    const eq = header.indexOf("=", start);
    if (eq >= 0 && eq < end && header.slice(start, eq).trim() === name) {
      let value = header.slice(eq + 1, end).trim();
      if (value.length >= 2 && value.charCodeAt(0) === 0x22 && value.charCodeAt(value.length - 1) === 0x22) {
        value = value.slice(1, -1);
      }
      if (value.includes("%")) {
        try {
          value = decodeURIComponent(value);
        } catch {
          // Not an escape sequence after all: keep the raw value.
        }
      }
      return value;
    }
    start = end + 1;
  }
  return null;
}
