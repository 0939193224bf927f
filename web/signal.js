// intercomd answering page: the signaling connection to the hub
// (docs/signaling.md). One WebSocket at a time, hello with the token,
// reconnection with backoff, keepalive pings. What the messages mean is
// app.js's and call.js's business. What createSignal returns is app.js's
// transport: a page for another signaling backend hands app.js one with the
// same hooks and methods instead (window.intercomTransport, see app.js).

export var PROTOCOL_VERSION = 1;
var PING_INTERVAL_MS = 10000;
var RECONNECT_INITIAL_MS = 1000;
var RECONNECT_MAX_MS = 5000;
var RECONNECT_JITTER = 0.2; // +/- 20 %

// A copy of a signaling message safe to keep: no token, SDP shortened.
export function summarize(msg) {
  var out = {};
  for (var k in msg) {
    if (!Object.prototype.hasOwnProperty.call(msg, k) || k === 'token') continue;
    if (k === 'subscription' || k === 'endpoint') { out[k] = '<push endpoint>'; continue; }
    out[k] = (k === 'sdp' && typeof msg[k] === 'string') ? '<' + msg[k].length + ' bytes>' : msg[k];
  }
  return out;
}

function wsUrl() {
  var u = new URL('ws', location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  u.hash = '';
  u.search = '';
  return u.toString();
}

// The token to connect with, the page told it is signing in; or null,
// the page told it is signed out. For any transport (see app.js).
export function signIn(hooks) {
  var token = hooks.token();
  if (!token) {
    hooks.status('offline', 'Not signed in');
    hooks.signedOut();
    return null;
  }
  hooks.signingIn();
  return token;
}

// hooks: { token() -> string|null, status(state, label), signingIn(),
//          signedOut(), message(msg), closed(code), record(kind, data),
//          setError(code, msg) }
export function createSignal(hooks) {
  var ws = null;
  var generation = 0;
  var reconnectAttempt = 0;
  var reconnectTimer = null;
  var pingTimer = null;
  var stopped = false;          // no reconnecting (refused, replaced, signed out)

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      hooks.record('tx-dropped', { type: msg && msg.type, call_id: msg && msg.call_id });
      return false;
    }
    ws.send(JSON.stringify(msg));
    if (msg.type !== 'ping') hooks.record('tx', summarize(msg));
    return true;
  }

  function connect() {
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; }
    var token = signIn(hooks);
    if (!token) return;
    stopped = false;
    var gen = ++generation;
    hooks.status('connecting', reconnectAttempt > 0 ? 'Reconnecting…' : 'Connecting…');
    var sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      hooks.setError('ws', String(e && e.message || e));
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      if (gen !== generation) return;
      console.info('[intercom] socket open, sending hello');
      sock.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, role: 'answerer', token: token, name: navigator.userAgent.slice(0, 64) }));
      hooks.record('tx', { type: 'hello', v: PROTOCOL_VERSION, role: 'answerer' });
    };
    sock.onmessage = function (ev) {
      if (gen !== generation) return;
      if (typeof ev.data !== 'string') return;
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) {
        hooks.setError('bad_json', 'unparsable message from hub');
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type !== 'pong') hooks.record('rx', summarize(msg));
      hooks.message(msg);
    };
    sock.onclose = function (ev) {
      if (gen !== generation) return;
      hooks.record('close', { code: ev.code, reason: ev.reason });
      console.info('[intercom] socket closed, code ' + ev.code);
      ws = null;
      if (pingTimer) { clearInterval(pingTimer); pingTimer = null; }
      if (ev.code === 4000) stopped = true;
      hooks.closed(ev.code);
      if (stopped) return;
      scheduleReconnect();
    };
    sock.onerror = function () { /* onclose follows */ };
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    var base = Math.min(RECONNECT_MAX_MS, RECONNECT_INITIAL_MS * Math.pow(2, reconnectAttempt));
    var delay = Math.round(base * (1 - RECONNECT_JITTER + Math.random() * 2 * RECONNECT_JITTER));
    reconnectAttempt++;
    hooks.status('offline', 'Offline, retrying in ' + Math.ceil(delay / 1000) + ' s');
    hooks.record('reconnect', { attempt: reconnectAttempt, delay_ms: delay });
    console.info('[intercom] reconnect attempt ' + reconnectAttempt + ' in ' + delay + ' ms');
    reconnectTimer = setTimeout(function () { reconnectTimer = null; connect(); }, delay);
  }

  // welcome: the connection is up.
  function welcomed() {
    reconnectAttempt = 0;
    if (pingTimer) clearInterval(pingTimer);
    pingTimer = setInterval(function () { send({ type: 'ping' }); }, PING_INTERVAL_MS);
  }

  // Refused (bad token, old protocol): no more attempts.
  function stop() { stopped = true; }

  // Closes the connection for good (signed out).
  function close() {
    stopped = true;
    generation++;
    if (ws) { try { ws.close(1000); } catch (e) { /* ignore */ } }
    ws = null;
    if (pingTimer) { clearInterval(pingTimer); pingTimer = null; }
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; }
  }

  // Signed in anew: a fresh connection, at once.
  function restart() {
    reconnectAttempt = 0;
    if (ws) { generation++; try { ws.close(1000); } catch (e) { /* ignore */ } ws = null; }
    connect();
  }

  // The browser is back online: skip the backoff's wait.
  function online() {
    if (!ws && !stopped && reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; connect(); }
  }

  return { send: send, connect: connect, welcomed: welcomed, stop: stop, close: close, restart: restart, online: online };
}
