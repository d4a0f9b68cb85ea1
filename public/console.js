// The web console: MQTT.js (public/vendor/mqtt.min.js, global `mqtt`) over WebSocket to this
// broker's /mqtt. Plain script, no build step. Everything received is rendered with
// textContent, never as HTML.
"use strict";

(() => {
  const MONITOR_FILTER = "$SYS/mon/#";
  const MAX_ROWS = 500;
  const CSRF_COOKIE = "mqtt_csrf";
  const CONNACK_TEXT = {
    1: "unacceptable protocol version",
    2: "identifier rejected (client id)",
    3: "server unavailable",
    4: "bad user name or password (is the token for this user name?)",
    5: "not authorized (expired token, disabled device, or no credentials)",
  };

  const $ = (id) => {
    const el = document.getElementById(id);
    if (!el) throw new Error(`console: #${id} missing`);
    return el;
  };
  const ui = {
    status: $("status"),
    connectForm: $("connect-form"),
    url: $("url"),
    user: $("user"),
    clientId: $("client-id"),
    token: $("token"),
    tokenLabel: $("token-label"),
    cookieHint: $("cookie-hint"),
    connect: $("connect"),
    disconnect: $("disconnect"),
    connError: $("conn-error"),
    subscribeForm: $("subscribe-form"),
    subFilter: $("sub-filter"),
    subQos: $("sub-qos"),
    subscribe: $("subscribe"),
    subscriptions: $("subscriptions"),
    publishForm: $("publish-form"),
    pubTopic: $("pub-topic"),
    pubPayload: $("pub-payload"),
    pubQos: $("pub-qos"),
    pubRetain: $("pub-retain"),
    publish: $("publish"),
    pubResult: $("pub-result"),
    messages: $("messages"),
    messagesEmpty: $("messages-empty"),
    msgCount: $("msg-count"),
    clearMessages: $("clear-messages"),
    events: $("events"),
    eventsStatus: $("events-status"),
    clearEvents: $("clear-events"),
    version: $("mqtt-version"),
    rateNow: $("rate-now"),
    rateChart: $("rate-chart"),
    clients: $("clients"),
    clientsCount: $("clients-count"),
    retainedForm: $("retained-form"),
    retainedFilter: $("retained-filter"),
    browse: $("browse"),
    retainedStatus: $("retained-status"),
    retained: $("retained"),
  };

  /** @type {import("mqtt").MqttClient | null} */
  let client = null;
  /** filter -> { qos, granted: number | null } */
  const subscriptions = new Map();
  let messageCount = 0;
  /** clientId -> the facts of its last Connect event, while no Disconnect followed. */
  const online = new Map();
  /** Messages received in each of the last RATE_SECONDS seconds, oldest first. */
  const RATE_SECONDS = 60;
  const perSecond = new Array(RATE_SECONDS).fill(0);
  let received = 0;
  /** A retained-message browse in progress: its filter and what arrived. */
  let browsing = null;

  // ---- topic matching (MQTT 3.1.1 §4.7), to sort messages into the two panels ----

  function matches(filter, topic) {
    const f = filter.split("/");
    const t = topic.split("/");
    // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a topic starting with $.
    if (topic.startsWith("$") && (f[0] === "#" || f[0] === "+")) return false;
    for (let i = 0; i < f.length; i++) {
      if (f[i] === "#") return true;
      if (i >= t.length) return false;
      if (f[i] !== "+" && f[i] !== t[i]) return false;
    }
    return f.length === t.length;
  }

  // ---- rendering ----

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clock(date) {
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  const utf8 = new TextDecoder("utf-8", { fatal: true });

  /** The payload as text, or a hex preview when it is not UTF-8. */
  function payloadNode(bytes) {
    try {
      return el("pre", "payload", bytes.length === 0 ? "(empty)" : utf8.decode(bytes));
    } catch {
      const hex = Array.from(bytes.subarray(0, 64), (b) => b.toString(16).padStart(2, "0")).join(" ");
      return el("pre", "payload binary", `binary, ${bytes.length} bytes: ${hex}${bytes.length > 64 ? " …" : ""}`);
    }
  }

  function prepend(list, item) {
    list.prepend(item);
    while (list.children.length > MAX_ROWS) list.lastElementChild?.remove();
  }

  function addMessage(topic, bytes, packet) {
    const li = el("li", "msg");
    li.dataset.topic = topic;
    li.dataset.qos = String(packet.qos);
    li.dataset.retain = String(packet.retain);
    const meta = el("div", "meta");
    meta.append(el("time", "", clock(new Date())), el("span", "topic", topic), el("span", "badge", `QoS ${packet.qos}`));
    if (packet.retain) meta.append(el("span", "badge retain", "retained"));
    if (packet.dup) meta.append(el("span", "badge", "dup"));
    meta.append(el("span", "", `${bytes.length} B`));
    li.append(meta, payloadNode(bytes));
    prepend(ui.messages, li);
    messageCount++;
    ui.msgCount.textContent = String(messageCount);
    ui.messagesEmpty.hidden = true;
  }

  /** A monitoring event: JSON with Action, ClientID, … (docs/protocol.md, monitoring); anything else shown raw. */
  function addEvent(topic, bytes, packet) {
    const li = el("li", "event");
    li.dataset.topic = topic;
    let body = null;
    try {
      const parsed = JSON.parse(utf8.decode(bytes));
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed;
    } catch {
      body = null;
    }
    const meta = el("div", "meta");
    const when = body && typeof body.Time === "string" ? new Date(body.Time) : new Date();
    meta.append(el("time", "", clock(Number.isNaN(when.getTime()) ? new Date() : when)));
    if (body && typeof body.Action === "string") {
      trackClient(body);
      li.dataset.action = body.Action;
      meta.append(el("span", `badge ${body.Action}`, body.Action));
      meta.append(el("span", "topic", String(body.ClientID ?? topic.slice("$SYS/mon/".length))));
      if (body.User) meta.append(el("span", "", `user ${body.User}`));
      if (body.Protocol) meta.append(el("span", "", String(body.Protocol)));
      if (body.ClientAddr) meta.append(el("span", "", String(body.ClientAddr)));
      if (packet.retain) meta.append(el("span", "badge retain", "retained"));
      li.append(meta);
      const details = [];
      if (body.Action !== "Connect") {
        if (body.CloseCode !== undefined) details.push(`close code ${body.CloseCode}`);
        if (body.Reason) details.push(String(body.Reason));
      }
      if (body.Action === "Disconnect") {
        details.push(`in ${body.ReadMsg ?? "?"} msg / ${body.ReadBytes ?? "?"} B, out ${body.WriteMsg ?? "?"} msg / ${body.WriteBytes ?? "?"} B`);
      }
      if (details.length > 0) li.append(el("p", "hint", details.join(" · ")));
    } else {
      meta.append(el("span", "topic", topic));
      if (packet.retain) meta.append(el("span", "badge retain", "retained"));
      li.append(meta, payloadNode(bytes));
    }
    prepend(ui.events, li);
  }

  /** The live client list: a Connect event adds its client, a Disconnect removes it (retained events give the state at subscribe). */
  function trackClient(body) {
    const id = typeof body.ClientID === "string" ? body.ClientID : null;
    if (id === null) return;
    if (body.Action === "Connect") online.set(id, { user: String(body.User ?? ""), protocol: String(body.Protocol ?? ""), addr: String(body.ClientAddr ?? ""), since: String(body.ConnectTime ?? body.Time ?? "") });
    else if (body.Action === "Disconnect") online.delete(id);
    else return;
    renderClients();
  }

  function renderClients() {
    ui.clients.replaceChildren();
    for (const [id, c] of [...online].sort(([a], [b]) => a.localeCompare(b))) {
      const li = el("li");
      li.dataset.clientId = id;
      const since = new Date(c.since);
      li.append(el("span", "topic", id), el("span", "", `user ${c.user}`), el("span", "badge", c.protocol));
      if (c.addr) li.append(el("span", "", c.addr));
      if (!Number.isNaN(since.getTime())) li.append(el("time", "", `since ${clock(since)}`));
      ui.clients.append(li);
    }
    ui.clientsCount.textContent = String(online.size);
  }

  /** One bar per second; the tallest second fills the height. */
  function renderRate() {
    const svg = ui.rateChart;
    const max = Math.max(1, ...perSecond);
    const width = 600 / RATE_SECONDS;
    const bars = perSecond.map((n, i) => {
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const h = (n / max) * 78;
      rect.setAttribute("x", String(i * width + 1));
      rect.setAttribute("y", String(80 - h));
      rect.setAttribute("width", String(width - 2));
      rect.setAttribute("height", String(h));
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = `${n} message(s)`;
      rect.append(title);
      return rect;
    });
    svg.replaceChildren(...bars);
    svg.dataset.total = String(received);
    ui.rateNow.textContent = String(perSecond[RATE_SECONDS - 1]);
  }

  function countReceived() {
    received++;
    perSecond[RATE_SECONDS - 1]++;
    renderRate();
  }

  function addRetained(topic, bytes) {
    const li = el("li");
    li.dataset.topic = topic;
    li.append(el("span", "topic", topic), el("span", "", `${bytes.length} B`), payloadNode(bytes));
    const clear = el("button", "small", "Clear");
    clear.type = "button";
    clear.title = `Delete the retained message of ${topic} (an empty retained publish)`;
    clear.addEventListener("click", () => {
      if (!client?.connected) return;
      client.publish(topic, "", { qos: 1, retain: true }, (err) => {
        if (err) ui.retainedStatus.textContent = `could not clear ${topic}: ${err.message}`;
        else li.remove();
      });
    });
    li.append(clear);
    ui.retained.append(li);
  }

  /**
   * Subscribes to the filter, keeps what arrives flagged retained, and unsubscribes at the
   * SUBACK: the retained messages are sent right after the SUBACK and before the UNSUBACK,
   * so when the UNSUBACK comes the list is complete. A filter the page already subscribes
   * to stays subscribed (subscribing again resends its retained messages [MQTT-3.8.4-3]).
   */
  function browseRetained(filter) {
    const c = client;
    if (!c?.connected || browsing) return;
    browsing = { filter, count: 0 };
    ui.retained.replaceChildren();
    ui.retainedStatus.textContent = `browsing ${filter}…`;
    const kept = subscriptions.get(filter);
    c.subscribe(filter, { qos: kept ? kept.qos : 0 }, (err, _granted, packet) => {
      const done = (text) => {
        ui.retainedStatus.textContent = text;
        ui.retainedStatus.dataset.done = "true";
        browsing = null;
      };
      if (err || refused(err, packet)) {
        done(`Not authorized for ${filter} (SUBACK 0x80).`);
        return;
      }
      const finish = () => done(`${browsing?.count ?? 0} retained message(s) match ${filter}.`);
      // For a filter the page keeps, an UNSUBSCRIBE of a filter nobody has is the marker instead.
      c.unsubscribe(kept ? `console-browse/${randomId()}` : filter, () => finish());
    });
  }

  function renderSubscriptions() {
    ui.subscriptions.replaceChildren();
    for (const [filter, sub] of subscriptions) {
      const li = el("li");
      li.dataset.filter = filter;
      const refused = sub.granted === 128;
      if (refused) li.className = "refused";
      const state = sub.granted === null ? "…" : refused ? "refused" : `QoS ${sub.granted}`;
      li.append(el("span", "filter", filter), el("span", "badge", state));
      const remove = el("button", "", "×");
      remove.type = "button";
      remove.title = `Unsubscribe ${filter}`;
      remove.setAttribute("aria-label", `Unsubscribe ${filter}`);
      remove.addEventListener("click", () => unsubscribe(filter));
      li.append(remove);
      ui.subscriptions.append(li);
    }
  }

  function setStatus(state, text = state) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
    const isOnline = state === "connected";
    ui.subscribe.disabled = !isOnline;
    ui.publish.disabled = !isOnline;
    ui.browse.disabled = !isOnline;
    ui.disconnect.disabled = client === null;
    ui.connect.disabled = client !== null;
  }

  function showError(text) {
    ui.connError.textContent = text;
    ui.connError.hidden = text === "";
  }

  // ---- MQTT ----

  function readCookie(name) {
    for (const part of document.cookie.split(";")) {
      const eq = part.indexOf("=");
      if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
    }
    return "";
  }

  function authMode() {
    const checked = ui.connectForm.querySelector('input[name="auth"]:checked');
    return checked ? checked.value : "token";
  }

  function connect() {
    showError("");
    if (typeof mqtt === "undefined") {
      showError("MQTT.js did not load (/vendor/mqtt.min.js); see docs/connecting.md, The console.");
      return;
    }
    let password;
    if (authMode() === "cookie") {
      // Browser flow: the JWT rides in the mqtt_token cookie of the WebSocket upgrade; the
      // CSRF token, readable only by pages of this origin, is the MQTT password.
      password = readCookie(CSRF_COOKIE);
      if (!password) {
        showError(`No ${CSRF_COOKIE} cookie for this site: your application's login sets mqtt_token and ${CSRF_COOKIE}.`);
        return;
      }
    } else {
      password = ui.token.value.trim();
      if (!password) {
        showError("Paste a token (npm start prints one), or use the browser cookie.");
        return;
      }
    }
    const c = mqtt.connect(ui.url.value.trim(), {
      protocolVersion: Number(ui.version.value) === 5 ? 5 : 4,
      clientId: ui.clientId.value.trim(),
      username: ui.user.value.trim(),
      password,
      clean: true,
      keepalive: 30,
      connectTimeout: 10_000,
      reconnectPeriod: 3_000,
    });
    client = c;
    let first = true;
    setStatus("connecting", "connecting…");

    c.on("connect", () => {
      setStatus("connected");
      if (!first) return; // MQTT.js resubscribes by itself after a reconnect.
      first = false;
      subscribeMonitor(c);
      for (const [filter, sub] of subscriptions) doSubscribe(c, filter, sub.qos);
    });
    c.on("reconnect", () => setStatus("reconnecting", "reconnecting…"));
    c.on("offline", () => {
      if (client === c) setStatus("reconnecting", "offline, retrying…");
    });
    c.on("error", (err) => {
      const code = typeof err.code === "number" ? err.code : null;
      if (code !== null && CONNACK_TEXT[code]) {
        // A refused CONNACK will not get better by retrying with the same credentials.
        showError(`Refused: CONNACK ${code}, ${CONNACK_TEXT[code]}.`);
        stop(c, "error", "refused");
      } else {
        showError(err.message || String(err));
      }
    });
    c.on("message", (topic, payload, packet) => {
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      countReceived();
      if (browsing && packet.retain && matches(browsing.filter, topic)) {
        browsing.count++;
        addRetained(topic, bytes);
      }
      if (matches(MONITOR_FILTER, topic)) addEvent(topic, bytes, packet);
      for (const filter of subscriptions.keys()) {
        if (matches(filter, topic)) {
          addMessage(topic, bytes, packet);
          break;
        }
      }
    });
  }

  function stop(c, state = "disconnected", text = state) {
    c.end(true);
    if (client === c) client = null;
    setStatus(state, text);
  }

  function subscribeMonitor(c) {
    ui.eventsStatus.textContent = `subscribing to ${MONITOR_FILTER}…`;
    c.subscribe(MONITOR_FILTER, { qos: 0 }, (err, _granted, packet) => {
      if (refused(err, packet)) {
        ui.eventsStatus.textContent = `Not authorized for ${MONITOR_FILTER} (SUBACK 0x80): the token's acl.sub needs "$SYS/#" (npm start's dev token has it).`;
      } else if (err) ui.eventsStatus.textContent = `subscribe failed: ${err.message}`;
      else ui.eventsStatus.textContent = `Subscribed to ${MONITOR_FILTER}.`;
    });
  }

  /** MQTT.js reports a SUBACK 0x80 as an error carrying the SUBACK packet (`err.packet`). */
  function refused(err, packet) {
    const codes = err?.packet?.granted ?? packet?.granted ?? [];
    return codes.some((code) => typeof code === "number" && (code & 0x80) !== 0);
  }

  function doSubscribe(c, filter, qos) {
    c.subscribe(filter, { qos }, (err, granted, packet) => {
      const sub = subscriptions.get(filter);
      if (!sub) return;
      sub.granted = err || refused(err, packet) ? 128 : (granted?.[0]?.qos ?? 128);
      renderSubscriptions();
    });
  }

  function unsubscribe(filter) {
    subscriptions.delete(filter);
    renderSubscriptions();
    if (client?.connected) client.unsubscribe(filter);
  }

  // ---- wiring ----

  function randomId() {
    const bytes = crypto.getRandomValues(new Uint8Array(4));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /**
   * `#token=…&user=…&clientId=…&auth=cookie&v=5` (what `npm start` prints; `v=5` for MQTT 5). A fragment never
   * reaches the server; it is removed from the address bar at once so the token stays out
   * of history and bookmarks.
   */
  function readFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    return {
      token: params.get("token") ?? "",
      user: params.get("user") ?? "",
      clientId: params.get("clientId") ?? "",
      auth: params.get("auth") === "cookie" ? "cookie" : "token",
      version: params.get("v") === "5" ? "5" : "4",
    };
  }

  function showAuthMode() {
    const cookie = authMode() === "cookie";
    ui.tokenLabel.hidden = cookie;
    ui.cookieHint.hidden = !cookie;
  }

  ui.connectForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (client === null) connect();
  });
  ui.disconnect.addEventListener("click", () => {
    if (client) stop(client);
  });
  for (const radio of ui.connectForm.querySelectorAll('input[name="auth"]')) radio.addEventListener("change", showAuthMode);

  ui.subscribeForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const filter = ui.subFilter.value.trim();
    const qos = Number(ui.subQos.value);
    if (!filter || !client?.connected) return;
    subscriptions.set(filter, { qos, granted: null });
    renderSubscriptions();
    ui.messagesEmpty.hidden = ui.messages.children.length > 0;
    ui.messagesEmpty.textContent = "Waiting for messages…";
    doSubscribe(client, filter, qos);
  });

  ui.publishForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const topic = ui.pubTopic.value.trim();
    const qos = Number(ui.pubQos.value);
    const retain = ui.pubRetain.checked;
    if (!client?.connected) return;
    if (/[+#]/.test(topic)) {
      ui.pubResult.textContent = "A topic name cannot contain the wildcards + or #.";
      return;
    }
    ui.pubResult.textContent = "publishing…";
    client.publish(topic, ui.pubPayload.value, { qos, retain }, (err) => {
      ui.pubResult.textContent = err
        ? `failed: ${err.message}`
        : `${qos === 2 ? "completed (PUBCOMP)" : qos === 1 ? "acknowledged (PUBACK)" : "sent"}: ${topic}${retain ? " (retained)" : ""} at ${clock(new Date())}`;
    });
  });

  ui.clearMessages.addEventListener("click", () => {
    ui.messages.replaceChildren();
    messageCount = 0;
    ui.msgCount.textContent = "0";
  });
  ui.clearEvents.addEventListener("click", () => ui.events.replaceChildren());
  ui.retainedForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const filter = ui.retainedFilter.value.trim();
    if (filter) browseRetained(filter);
  });
  // The chart moves one second to the left every second.
  setInterval(() => {
    perSecond.shift();
    perSecond.push(0);
    renderRate();
  }, 1000);
  renderRate();

  const fragment = readFragment();
  ui.url.value = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/mqtt`;
  ui.user.value = fragment.user;
  ui.clientId.value = fragment.clientId || `console-${randomId()}`;
  ui.token.value = fragment.token;
  ui.version.value = fragment.version;
  const authRadio = ui.connectForm.querySelector(`input[name="auth"][value="${fragment.auth}"]`);
  if (authRadio) authRadio.checked = true;
  showAuthMode();
  setStatus("disconnected");
  if (fragment.user && (fragment.token || fragment.auth === "cookie")) connect();
})();
