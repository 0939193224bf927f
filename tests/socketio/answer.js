// The answering page for a Socket.IO backend: the product's own page
// (web/index.html with app.js, call.js and media.js, served by
// relay_server.mjs) with this transport in place of signal.js's WebSocket.
// Loaded before app.js, after the socket.io-client bundle (global `io`).
//
// Address: /?raw=1#token=<answerer key>&id=<answerer id>&ns=/doorbell. The
// page keeps the token as it does any invite link's; this transport gives
// it to the server in the CONNECT packet's auth ({ key, id }).
//
// What differs from the hub's protocol (docs/signaling.md):
// - the messages are events named after their types, without `type`;
// - there is no hello/welcome: Socket.IO's connect is the welcome;
// - the relay carries only a call's messages: what else the page asks
//   (call history, push) is answered as a hub without that feature would.
// Socket.IO pings and reconnects by itself.
//
// Test hooks on window.answerer: state, callId, firstAudioAtEpoch, pcState,
// accept(), hangup(), remoteDominantHz() from the page (window.intercom);
// connected and connects from this transport.
import { signIn, summarize } from './signal.js';

var RELAYED = { accept: true, answer: true, candidate: true, hangup: true, decline: true, error: true };

var link = { connected: false, connects: 0 };
var lastPcState = null;

window.answerer = {
  get state() { return window.intercom.state; },
  get callId() { return window.intercom.callId; },
  get firstAudioAtEpoch() { return window.intercom.firstAudioAtEpoch; },
  // The last state of the call's peer connection, from the page's event log.
  get pcState() {
    var events = window.intercom.events;
    for (var i = events.length - 1; i >= 0; i--) {
      if (events[i].kind === 'pc-state') { lastPcState = events[i].state; break; }
    }
    return lastPcState;
  },
  get connected() { return link.connected; },
  get connects() { return link.connects; },
  accept: function () { return window.intercom.accept(); },
  hangup: function () { return window.intercom.hangup(); },
  remoteDominantHz: function () { return window.intercom.remoteDominantHz(); }
};

// hooks and methods as signal.js's createSignal.
function createSocketIoTransport(hooks) {
  var params = new URLSearchParams(location.hash.replace(/^#/, ''));
  var id = params.get('id');
  var socket = null;

  function send(msg) {
    if (!socket || !socket.connected) {
      hooks.record('tx-dropped', { type: msg && msg.type, call_id: msg && msg.call_id });
      return false;
    }
    if (!RELAYED[msg.type]) {
      hooks.record('tx-unsupported', { type: msg.type });
      setTimeout(function () {
        hooks.message({ type: 'error', code: 'unknown_type', ref: msg.type, message: 'not relayed by this server' });
      }, 0);
      return true;
    }
    var data = {};
    for (var k in msg) if (k !== 'type') data[k] = msg[k];
    socket.emit(msg.type, data);
    hooks.record('tx', summarize(msg));
    return true;
  }

  function connect() {
    var token = signIn(hooks);
    if (!token) return;
    hooks.status('connecting', 'Connecting…');
    socket = io(params.get('ns') || '/doorbell', {
      auth: { key: token, id: id },
      transports: ['websocket'],
      reconnectionDelay: 300,
      reconnectionDelayMax: 1000
    });
    socket.on('connect', function () {
      link.connected = true;
      link.connects++;
      hooks.record('connect', { sid: socket.id });
      hooks.message({ type: 'welcome', v: 1, id: id, name: id, ice_servers: [] });
    });
    socket.on('disconnect', function (reason) {
      link.connected = false;
      hooks.record('close', { reason: reason });
      hooks.status('offline', 'Reconnecting…');
      hooks.closed(1006);
      // A server that closes the session on purpose (shutting down for a
      // restart) is not retried by the client on its own.
      if (reason === 'io server disconnect') socket.connect();
    });
    socket.on('connect_error', function (e) {
      hooks.setError('connect_error', String(e && e.message));
    });
    socket.onAny(function (event, data) {
      var msg = {};
      for (var k in data) msg[k] = data[k];
      msg.type = event;
      hooks.record('rx', summarize(msg));
      hooks.message(msg);
    });
  }

  function close() {
    if (socket) socket.disconnect();
    socket = null;
    link.connected = false;
  }

  return {
    send: send,
    connect: connect,
    welcomed: function () {},
    stop: close,
    close: close,
    restart: function () { close(); connect(); },
    online: function () {}
  };
}

window.intercomTransport = createSocketIoTransport;
