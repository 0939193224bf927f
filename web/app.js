// intercomd answering page: rings when a visitor presses the door's call
// button, answers with two-way WebRTC audio. Protocol: docs/signaling.md.
// Plain browser JavaScript modules, no build step, no external resources.
//
// This module is the shell: the DOM, the window.intercom hooks, the
// installable app (service worker, push, history). What a call does next
// is decided by call.js, a pure function from (state, event) to (state,
// effects); the shell feeds it events and carries out its effects, with
// signal.js (the hub connection) and media.js (sound and WebRTC).
import { step, initialState, canCallDoor } from './call.js';
import { createSignal, summarize } from './signal.js';
import { createMedia } from './media.js';

var MAX_EVENTS = 500;
var STORAGE_KEY = 'intercom.token';

// First of all: an invite link's token (#token=…, which never reaches a
// server; the older ?token=… too) is kept on this device and taken out of
// the address bar and the history entry, so it is not bookmarked, shared
// or left in the history.
var urlToken = takeTokenFromUrl();
// A notification's Answer/Decline opened this window (#answer=<call id>):
// taken out of the address at once too, acted on when that call rings.
var urlCallAction = takeCallActionFromUrl();

var params = new URLSearchParams(location.search);
// raw=1 turns the browser's voice processing off (tests compare tones).
var rawAudio = params.get('raw') === '1';
// autoaccept=1 answers every ring at once (kiosk or benchmark use).
var autoAccept = params.get('autoaccept') === '1';

var $ = function (id) { return document.getElementById(id); };
var ui = {
  conn: $('conn'), connLabel: $('conn-label'), call: $('call'),
  stateLabel: $('state-label'), doorName: $('door-name'), message: $('message'),
  elapsed: $('elapsed'), ringButtons: $('ring-buttons'), callButtons: $('call-buttons'),
  accept: $('accept'), decline: $('decline'), mute: $('mute'), hangup: $('hangup'),
  login: $('login'), loginHint: $('login-hint'), tokenForm: $('token-form'),
  tokenInput: $('token-input'), forget: $('forget'), soundTest: $('sound-test'),
  audio: $('remote-audio'), doorButtons: $('door-buttons'), openDoor: $('open-door'),
  doorStatus: $('door-status'), doorCall: $('door-call'),
  doorCallTarget: $('door-call-target'), doorCallTargetLabel: $('door-call-target-label'),
  doorCallButton: $('door-call-button'),
  micNotice: $('mic-notice'), micNoticeText: $('mic-notice-text'), micNoticeLink: $('mic-notice-link'),
  micNoticeHref: $('mic-notice-href'), micNoticeAsk: $('mic-notice-ask'),
  push: $('push'), pushStatus: $('push-status'), pushOn: $('push-on'), pushOff: $('push-off'),
  history: $('history'), historyList: $('history-list'), historyEmpty: $('history-empty')
};

var STATE_LABELS = {
  idle: 'Idle', ringing: 'Ringing', connecting: 'Connecting', in_call: 'In call'
};

// ---------------------------------------------------------------- state
var cs = initialState({ autoAccept: autoAccept }); // the call's state (call.js)
var iceServers = [];
var clientInfo = null;        // /client.json, once fetched
var elapsedTimer = null;

// Test and diagnostics hooks. Never holds the token.
var intercom = {
  state: 'idle',
  connection: 'offline',
  callId: null,
  doorName: null,
  answererId: null,
  events: [],
  lastError: null,
  firstAudioAt: null,
  firstAudioAtEpoch: null,
  ringAtEpoch: null,
  peerConnections: 0,
  micRequests: 0,
  micNotice: null,              // why the microphone is unavailable, if it is
  listenOnly: false,            // the current call was answered without a microphone
  dataChannel: null,
  muted: false,
  remoteLevel: function () { return media.remoteLevel(); },
  remoteDominantHz: function () { return media.remoteDominantHz(); },
  send: function (msg) { return signal.send(msg); },
  accept: function () { return dispatch({ type: 'accept' }); },
  decline: function () { return dispatch({ type: 'decline' }); },
  hangup: function () { return dispatch({ type: 'hangup', reason: 'normal' }); },
  openDoor: function () { return openDoor(); },
  callDoor: function (doorId) { return callDoor(doorId); },
  callableDoors: [],
  lastDoorResult: null,
  // Installable app, push and history (see "installable app" below).
  serviceWorker: null,          // 'registered', 'unsupported' or the error's name
  push: 'hidden',               // hidden, unsupported, off, working, on, blocked, error
  history: null,                // the last `history` calls, newest first
  missedUnseen: 0,              // the app badge's count
  receive: function (msg) { record('rx', summarize(msg)); handleMessage(msg); },
  callAction: function (type, callId) { requestCallAction(type, callId); }
};
window.intercom = intercom;

function record(kind, data) {
  var ev = { t: Math.round(performance.now() * 10) / 10, kind: kind };
  for (var k in data) {
    if (Object.prototype.hasOwnProperty.call(data, k)) ev[k] = data[k];
  }
  intercom.events.push(ev);
  if (intercom.events.length > MAX_EVENTS) intercom.events.splice(0, intercom.events.length - MAX_EVENTS);
}

function setError(code, message) {
  intercom.lastError = { code: code || 'error', message: message || '', at: performance.now() };
  record('error', { code: intercom.lastError.code, message: intercom.lastError.message });
}

// The hub connection: signal.js, or the transport a page for another
// signaling backend provides in window.intercomTransport before this module
// runs (a function taking the same hooks and returning the same methods).
var createTransport = typeof window.intercomTransport === 'function' ? window.intercomTransport : createSignal;
var signal = createTransport({
  token: readToken,
  status: setConnection,
  signingIn: function () { ui.login.hidden = true; },
  signedOut: function () { showLogin(); },
  message: handleMessage,
  closed: function (code) {
    dispatch({ type: 'offline' });
    if (code === 4000) {
      setConnection('offline', 'Opened elsewhere');
      showMessage('This flat was opened in another window. Reload to use it here.');
    }
  },
  record: record,
  setError: setError
});

var media = createMedia({
  intercom: intercom,
  audio: ui.audio,
  openDoorButton: ui.openDoor,
  rawAudio: rawAudio,
  iceServers: function () { return iceServers; },
  send: function (msg) { return signal.send(msg); },
  record: record,
  setError: setError,
  dispatch: function (event) { dispatch(event); },
  micNotice: function (kind) { if (kind) showMicNotice(kind); else hideMicNotice(); },
  onDoorResult: onDoorResult
});

// ---------------------------------------------------------------- the call
// One event into call.js; its effects carried out in order. An effect may
// feed a new event back at once (media reporting a failure): that one runs
// on the state as it is by then.
function dispatch(event) {
  var r = step(cs, event);
  cs = r.state;
  r.effects.forEach(run);
  refreshDoorCall();
  return r.result;
}

function currentCallId() { return cs.call ? cs.call.id : null; }

function run(e) {
  switch (e.type) {
    case 'send': signal.send(e.msg); return;
    case 'show': setState(e.state, e.message, e.callId, e.doorName); return;
    case 'message': showMessage(e.text); return;
    case 'newCall':
      intercom.callId = e.callId;
      intercom.doorName = e.doorName;
      intercom.ringAtEpoch = performance.timeOrigin + performance.now();
      intercom.firstAudioAt = null;
      intercom.firstAudioAtEpoch = null;
      intercom.dataChannel = null;
      ui.doorName.textContent = e.doorName;
      return;
    case 'doorName':
      intercom.doorName = e.name;
      ui.doorName.textContent = e.name;
      return;
    case 'ring': media.startRinging(); return;
    case 'stopRing': media.stopRinging(); return;
    case 'unlockAudio': media.ensureAudioContext(); return;
    case 'getMic': media.getMic(e.callId, e.mode); return;
    case 'startMedia': media.start(e.callId, e.gen, e.sdp); return;
    case 'renewMedia': media.renew(e.callId, e.gen, e.sdp); return;
    case 'restartIce': media.restartIce(e.callId, e.sdp); return;
    case 'addCandidate': media.addCandidate(e.callId, e.candidate); return;
    case 'endMedia': media.end(e.callId); return;
    case 'startElapsed': startElapsed(); return;
    case 'stopElapsed': stopElapsed(); return;
    case 'mute': applyMute(e.muted, e.listenOnly); return;
    case 'listenOnly': intercom.listenOnly = e.value; return;
    case 'after': setTimeout(function () { dispatch(e.event); }, e.ms); return;
    case 'record': record(e.kind, e.data); return;
    case 'log': console.info('[intercom] ' + e.text); return;
    default: console.warn('[intercom] unknown effect ' + e.type);
  }
}

// ---------------------------------------------------------------- UI
function setConnection(state, label) {
  intercom.connection = state;
  ui.conn.className = 'conn conn-' + state;
  ui.connLabel.textContent = label;
}

function setState(state, message, callId, doorName) {
  if (intercom.state !== state) record('state', { state: state, call_id: callId || null });
  intercom.state = state;
  ui.call.className = 'panel state-' + state;
  ui.stateLabel.textContent = STATE_LABELS[state] || state;
  if (message !== undefined) ui.message.textContent = message;
  ui.ringButtons.hidden = state !== 'ringing';
  ui.callButtons.hidden = !(state === 'connecting' || state === 'in_call');
  ui.doorButtons.hidden = !(state === 'connecting' || state === 'in_call');
  if (state === 'idle' || state === 'ringing') {
    ui.openDoor.disabled = true;
    ui.doorStatus.textContent = '';
  }
  ui.elapsed.hidden = state !== 'in_call';
  if (state === 'idle') {
    ui.doorName.textContent = '';
    intercom.doorName = null;
    intercom.callId = null;
  }
  document.title = state === 'ringing' && callId ? 'Ringing: ' + doorName : 'Door intercom';
  if (state === 'ringing') ui.accept.focus();
  refreshDoorCall();
}

function showMessage(text) { ui.message.textContent = text; }

function formatElapsed(ms) {
  var s = Math.max(0, Math.floor(ms / 1000));
  var m = Math.floor(s / 60);
  var h = Math.floor(m / 60);
  var ss = ('0' + (s % 60)).slice(-2);
  return h > 0 ? h + ':' + ('0' + (m % 60)).slice(-2) + ':' + ss : m + ':' + ss;
}

function startElapsed() {
  stopElapsed();
  var started = performance.now();
  ui.elapsed.textContent = '0:00';
  elapsedTimer = setInterval(function () {
    ui.elapsed.textContent = formatElapsed(performance.now() - started);
  }, 500);
}

function stopElapsed() {
  if (elapsedTimer) clearInterval(elapsedTimer);
  elapsedTimer = null;
}

function applyMute(muted, listenOnly) {
  intercom.muted = muted;
  media.applyMute(currentCallId(), muted);
  ui.mute.textContent = muted ? 'Unmute' : 'Mute';
  ui.mute.setAttribute('aria-pressed', muted ? 'true' : 'false');
  ui.mute.setAttribute('aria-label', muted ? 'Unmute microphone' : 'Mute microphone');
  ui.mute.classList.toggle('active', muted);
  ui.mute.disabled = !!listenOnly;
}

// ---------------------------------------------------------------- signaling
function handleMessage(msg) {
  switch (msg.type) {
    case 'welcome': return onWelcome(msg);
    case 'ring': dispatch({ type: 'ring', msg: msg, now: Date.now() }); return;
    case 'calling': case 'taken': case 'cancel': case 'offer': case 'candidate':
      dispatch({ type: msg.type, msg: msg });
      return;
    case 'hangup': dispatch({ type: 'remoteHangup', msg: msg }); return;
    case 'error': return onError(msg);
    case 'history': return onHistory(msg);
    case 'push_subscribed': return onPushSubscribed();
    case 'push_unsubscribed': return;
    case 'registered': case 'pong': return;
    default:
      console.info('[intercom] ignoring message of type ' + msg.type);
  }
}

function onWelcome(msg) {
  iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
  intercom.answererId = msg.id || null;
  signal.welcomed();
  setConnection('online', 'Connected' + (msg.name ? ' as ' + msg.name : ''));
  console.info('[intercom] connected as ' + (msg.id || '?'));
  setPushOffer(msg.push);
  dispatch({ type: 'online', doors: msg.doors });
  showCallableDoors();
}

function onError(msg) {
  if (onAppFeatureError(msg)) return;
  setError(msg.code, msg.message);
  if (msg.ref === 'call_door') dispatch({ type: 'callDoorRefused', msg: msg });
  console.warn('[intercom] hub error ' + msg.code + (msg.ref ? ' (' + msg.ref + ')' : '') + ': ' + (msg.message || ''));
  if (msg.code === 'auth_failed' || msg.code === 'unsupported_version') {
    signal.stop();
    setConnection('offline', msg.code === 'auth_failed' ? 'Access denied' : 'Unsupported version');
    if (msg.code === 'auth_failed') {
      forgetToken();
      showLogin('The access token was refused. Enter a valid one.');
    }
  }
}

// ---------------------------------------------------------------- sign-in
function takeTokenFromUrl() {
  var search = new URLSearchParams(location.search);
  var hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  if (!hash.has('token') && !search.has('token')) return null;
  var t = hash.get('token') || search.get('token');
  hash.delete('token');
  search.delete('token');
  var q = search.toString();
  var h = hash.toString();
  try {
    history.replaceState(history.state, '', location.pathname + (q ? '?' + q : '') + (h ? '#' + h : ''));
  } catch (e) { /* ignore */ }
  if (t) { try { localStorage.setItem(STORAGE_KEY, t); } catch (e) { /* kept in memory only */ } }
  return t || null;
}

// The token this tab was opened or signed in with wins over the stored
// one (another tab may have stored another flat's); a reload uses storage.
function readToken() {
  if (urlToken) return urlToken;
  try { return localStorage.getItem(STORAGE_KEY); } catch (e) { return null; }
}

function forgetToken() {
  urlToken = null;
  try { localStorage.removeItem(STORAGE_KEY); } catch (e) { /* ignore */ }
}

function showLogin(hint) {
  ui.login.hidden = false;
  if (hint) ui.loginHint.textContent = hint;
  ui.tokenInput.focus();
}

// ---------------------------------------------------------------- microphone notice
var MIC_NOTICES = {
  insecure: 'This page was opened at an address where your browser does not allow the microphone. ' +
    'You can still answer, listen to the visitor and open the door, but the visitor cannot hear you.',
  denied: 'The microphone is blocked for this page, so the visitor cannot hear you. ' +
    'You can still listen and open the door. To allow it: tap the lock or settings icon beside the ' +
    'address, allow the microphone, then reload the page.',
  missing: 'No microphone was found, so the visitor cannot hear you. You can still listen and open ' +
    'the door. Connect or switch on a microphone, then reload the page.',
  busy: 'The microphone is in use by another app, so the visitor cannot hear you. You can still ' +
    'listen and open the door. Close the other app, then reload the page.'
};

function showMicNotice(kind) {
  intercom.micNotice = kind;
  ui.micNoticeText.textContent = MIC_NOTICES[kind] || MIC_NOTICES.denied;
  var url = kind === 'insecure' && clientInfo && typeof clientInfo.https_url === 'string' &&
    /^https:\/\//i.test(clientInfo.https_url) ? clientInfo.https_url : null;
  if (url) {
    ui.micNoticeHref.href = url;
    ui.micNoticeHref.textContent = url;
  }
  ui.micNoticeLink.hidden = !url;
  ui.micNoticeAsk.hidden = kind !== 'insecure' || !!url || clientInfo === null;
  ui.micNotice.hidden = false;
}

function hideMicNotice() {
  intercom.micNotice = null;
  ui.micNotice.hidden = true;
}

function loadClientInfo() {
  var done = function (info) {
    clientInfo = info && typeof info === 'object' ? info : {};
    if (intercom.micNotice === 'insecure') showMicNotice('insecure');
  };
  if (!window.fetch) { done(null); return; }
  fetch(new URL('client.json', location.href).toString(), { cache: 'no-store', credentials: 'omit' })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(done, function () { done(null); });
}

// ---------------------------------------------------------------- talk to the door
// A resident with the permission calls the door (docs/signaling.md,
// "A resident calls the door"): the hub lists the doors it may call in
// `welcome`; the call then runs like an answered one (the door offers).
function showCallableDoors() {
  intercom.callableDoors = cs.doors.map(function (d) { return { id: d.id, name: d.name }; });
  var select = ui.doorCallTarget;
  while (select.firstChild) select.removeChild(select.firstChild);
  cs.doors.forEach(function (d) {
    var opt = document.createElement('option');
    opt.value = d.id;
    opt.textContent = d.name;
    select.appendChild(opt);
  });
  // Several doors: the resident chooses; one door needs no choice.
  select.hidden = cs.doors.length < 2;
  ui.doorCallTargetLabel.hidden = select.hidden;
  refreshDoorCall();
}

// The control only for permitted answerers, only while nothing else goes on.
function refreshDoorCall() {
  if (!ui.doorCall) return;
  ui.doorCall.hidden = !canCallDoor(cs);
}

function newCallDoorId() {
  var bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return 'r-' + Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
}

function callDoor(doorId) {
  return dispatch({ type: 'callDoor', doorId: doorId, selected: ui.doorCallTarget.value, callId: newCallDoorId() });
}

// ---------------------------------------------------------------- door
// Door opening travels on the call's data channel (DTLS), never over
// signaling: docs/signaling.md, "Door opening".
function openDoor() {
  var nonce = media.openDoor(currentCallId());
  if (nonce) ui.doorStatus.textContent = 'Opening…';
  return nonce;
}

var DOOR_REASONS = {
  rate_limited: 'Please wait a moment before trying again',
  tamper_lockout: 'Remote opening is locked (tamper alarm)',
  no_call: 'No call in progress',
  other_call: 'This call has ended',
  replay: 'Request refused',
  bad_nonce: 'Request refused',
  bad_request: 'Request refused'
};

function onDoorResult(msg) {
  intercom.lastDoorResult = msg;
  record('door-result', { granted: !!msg.granted, reason: msg.reason || null, nonce: msg.nonce });
  if (msg.granted) {
    var secs = Math.round((msg.pulse_ms || 0) / 1000);
    ui.doorStatus.textContent = 'Door opened' + (secs ? ' for ' + secs + ' s' : '');
  } else {
    ui.doorStatus.textContent = 'Not opened: ' + (DOOR_REASONS[msg.reason] || msg.reason || 'refused');
  }
}

// ---------------------------------------------------------------- installable app
// The page as an app on the resident's phone: a service worker (web/sw.js)
// keeps the shell for offline starts and shows ringing notifications from
// Web Push; Answer/Decline in a notification reach this page as a
// message or as #answer=/#decline= in the address. Browsers allow all of
// it only in a secure context: on plain http on the LAN (or with a
// certificate the phone does not trust) the page works as before.
var swReady = Promise.resolve(null);
var swProblem = null;           // why there is no worker: 'insecure', 'unsupported', 'failed'
var vapidKey = null;            // welcome.push.vapid_public_key
var historyCalls = [];
var seenTimer = null;
var SEEN_KEY_PREFIX = 'intercom.historySeenAt.';

function takeCallActionFromUrl() {
  var hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  var type = hash.has('answer') ? 'answer' : hash.has('decline') ? 'decline' : null;
  if (!type) return null;
  var id = hash.get(type);
  hash.delete('answer');
  hash.delete('decline');
  var h = hash.toString();
  try {
    history.replaceState(history.state, '', location.pathname + location.search + (h ? '#' + h : ''));
  } catch (e) { /* ignore */ }
  return id ? { type: type, callId: id } : null;
}

function registerServiceWorker() {
  if (!window.isSecureContext) { swProblem = 'insecure'; intercom.serviceWorker = 'unsupported'; return; }
  if (!('serviceWorker' in navigator)) { swProblem = 'unsupported'; intercom.serviceWorker = 'unsupported'; return; }
  navigator.serviceWorker.addEventListener('message', onWorkerMessage);
  if (navigator.serviceWorker.startMessages) navigator.serviceWorker.startMessages();
  swReady = navigator.serviceWorker.register('/sw.js', { scope: '/' }).then(function (reg) {
    intercom.serviceWorker = 'registered';
    record('sw-registered', {});
    return reg;
  }, function (err) {
    // A certificate the browser does not trust ends here (SecurityError).
    swProblem = 'failed';
    intercom.serviceWorker = (err && err.name) || 'Error';
    record('sw-error', { error: intercom.serviceWorker });
    console.info('[intercom] no service worker: ' + (err && err.message));
    return null;
  });
}

function onWorkerMessage(ev) {
  var m = ev.data;
  if (!m || (m.type !== 'answer' && m.type !== 'decline') || typeof m.call_id !== 'string') return;
  requestCallAction(m.type, m.call_id);
}

// ---- Answer/Decline from a notification: call.js keeps it until that
// call rings here (or it is clearly over).
function requestCallAction(type, callId) {
  dispatch({ type: 'callAction', action: type, callId: callId, now: Date.now() });
}

function onAppFeatureError(msg) {
  var ref = msg.ref;
  if (ref === 'get_history' && msg.code === 'unknown_type') {
    // A hub without call history: the page tells missed calls as before.
    dispatch({ type: 'noHistory' });
    ui.history.hidden = true;
    return true;
  }
  if (ref === 'push_subscribe' || ref === 'push_unsubscribe') {
    record('push-refused', { code: msg.code, ref: ref });
    if (ref === 'push_subscribe') setPushState('error');
    return msg.code === 'unknown_type';
  }
  return false;
}

// ---- Push subscription
var PUSH_TEXT = {
  hidden: '',
  insecure: 'Ringing with the page closed needs the station\'s secure address with a trusted certificate. Until then, keep this page open to hear the door.',
  unsupported: 'This browser cannot ring with the page closed. Keep this page open to hear the door.',
  off: 'This phone rings only while this page is open.',
  working: 'Setting up…',
  on: 'This phone rings even when the page is closed.',
  blocked: 'Notifications are blocked for this page. To ring with the page closed, allow them in the browser\'s settings for this site.',
  error: 'Ringing with the page closed could not be set up. Try again later.'
};

function setPushState(state) {
  intercom.push = state;
  ui.push.hidden = state === 'hidden';
  var key = state === 'unsupported' && swProblem !== 'unsupported' ? 'insecure' : state;
  ui.pushStatus.textContent = PUSH_TEXT[key] || '';
  ui.pushOn.hidden = !(state === 'off' || state === 'error');
  ui.pushOff.hidden = state !== 'on';
  ui.pushOn.disabled = false;
  record('push-state', { state: state });
}

function pushCapable(reg) {
  return !!(reg && reg.pushManager && window.Notification && window.PushManager);
}

function b64urlToBytes(s) {
  var b64 = s.replace(/-/g, '+').replace(/_/g, '/');
  while (b64.length % 4) b64 += '=';
  var bin = atob(b64);
  var out = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function sameKey(sub, key) {
  var have = sub.options && sub.options.applicationServerKey;
  if (!have) return true; // cannot tell: keep it
  var a = new Uint8Array(have), b = b64urlToBytes(key);
  if (a.length !== b.length) return false;
  for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sendSubscription(sub) {
  var j = sub.toJSON();
  return signal.send({
    type: 'push_subscribe',
    subscription: { endpoint: j.endpoint, keys: { p256dh: j.keys && j.keys.p256dh, auth: j.keys && j.keys.auth } }
  });
}

function setPushOffer(push) {
  vapidKey = push && typeof push.vapid_public_key === 'string' && push.vapid_public_key ? push.vapid_public_key : null;
  if (!vapidKey) { setPushState('hidden'); return; }
  if (swProblem) { setPushState('unsupported'); return; }
  swReady.then(function (reg) {
    if (!pushCapable(reg)) { setPushState('unsupported'); return null; }
    if (Notification.permission === 'denied') { setPushState('blocked'); return null; }
    return reg.pushManager.getSubscription().then(function (sub) {
      if (!sub || Notification.permission !== 'granted') { setPushState('off'); return null; }
      if (!sameKey(sub, vapidKey)) {
        // The hub has a new key: the old subscription cannot reach it.
        // The resident agreed already, so renew without asking.
        return sub.unsubscribe().then(function () { return subscribe(reg); });
      }
      // Tell the hub again on every connection: it may have lost it.
      sendSubscription(sub);
      setPushState('on');
      return null;
    });
  }).catch(function (err) {
    record('push-error', { error: err && err.name });
    setPushState('error');
  });
}

function subscribe(reg) {
  setPushState('working');
  return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlToBytes(vapidKey) })
    .then(function (sub) {
      if (!sendSubscription(sub)) { setPushState('error'); return; }
      // "on" once the hub confirms (push_subscribed).
    });
}

function enablePush() {
  if (!vapidKey) return;
  setPushState('working');
  ui.pushOn.disabled = true;
  var asked;
  try {
    asked = Promise.resolve(Notification.requestPermission());
  } catch (e) {
    asked = Promise.reject(e);
  }
  asked.then(function (perm) {
    if (perm !== 'granted') { setPushState(perm === 'denied' ? 'blocked' : 'off'); return null; }
    return swReady.then(function (reg) {
      if (!pushCapable(reg)) { setPushState('unsupported'); return null; }
      return subscribe(reg);
    });
  }).catch(function (err) {
    record('push-error', { error: err && err.name });
    console.warn('[intercom] push subscription failed: ' + (err && err.name));
    setPushState(window.Notification && Notification.permission === 'denied' ? 'blocked' : 'error');
  });
}

function onPushSubscribed() {
  if (intercom.push === 'working' || intercom.push === 'error') setPushState('on');
}

function disablePush() {
  setPushState('working');
  swReady.then(function (reg) {
    return reg && reg.pushManager ? reg.pushManager.getSubscription() : null;
  }).then(function (sub) {
    if (!sub) return null;
    signal.send({ type: 'push_unsubscribe', endpoint: sub.endpoint });
    return sub.unsubscribe();
  }).then(function () { setPushState('off'); }, function (err) {
    record('push-error', { error: err && err.name });
    setPushState('off');
  });
}

// An app window already open at #answer=… and opened again from a
// notification only changes its fragment.
window.addEventListener('hashchange', function () {
  var a = takeCallActionFromUrl();
  if (a) requestCallAction(a.type, a.callId);
});

ui.pushOn.addEventListener('click', function () { enablePush(); });
ui.pushOff.addEventListener('click', function () { disablePush(); });

// ---- Call history
function seenKey() { return SEEN_KEY_PREFIX + (intercom.answererId || ''); }

function seenAt() {
  var v = null;
  try { v = localStorage.getItem(seenKey()); } catch (e) { /* ignore */ }
  var n = Number(v);
  return v !== null && isFinite(n) ? n : 0;
}

// A call this resident was not rung for (quiet hours) is a missed call
// for them, whoever answered it.
function missedHere(c) {
  return c.outcome === 'missed' || !!c.quiet_hours;
}

function describeOutcome(c) {
  if (c.quiet_hours) {
    var other = c.outcome === 'answered' && c.answered_by && (c.answered_by.name || c.answered_by.id);
    return other ? 'Missed (quiet hours) · answered by ' + other : 'Missed (quiet hours)';
  }
  switch (c.outcome) {
    case 'answered': {
      var who = c.answered_by && (c.answered_by.name || c.answered_by.id);
      var text = who ? 'Answered by ' + who : 'Answered';
      if (typeof c.duration_ms === 'number' && c.duration_ms >= 0) text += ' · ' + formatElapsed(c.duration_ms);
      return text;
    }
    case 'missed': return c.quiet_hours ? 'Missed (quiet hours)' : 'Missed';
    case 'declined': return 'Declined';
    case 'failed': return 'Failed';
    default: return String(c.outcome || '');
  }
}

function formatWhen(ms) {
  var d = new Date(ms);
  var time = ('0' + d.getHours()).slice(-2) + ':' + ('0' + d.getMinutes()).slice(-2);
  var today = new Date();
  var yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return time;
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday ' + time;
  return d.toLocaleDateString(undefined, { weekday: 'short', day: 'numeric', month: 'short' }) + ' ' + time;
}

function onHistory(msg) {
  dispatch({ type: 'history' });
  var calls = (Array.isArray(msg.calls) ? msg.calls : []).filter(function (c) {
    return c && typeof c.call_id === 'string' && typeof c.started_at_ms === 'number';
  });
  calls.sort(function (a, b) { return b.started_at_ms - a.started_at_ms; });
  historyCalls = calls;
  intercom.history = calls;
  renderHistory();
  updateBadge();
}

function renderHistory() {
  var list = ui.historyList;
  while (list.firstChild) list.removeChild(list.firstChild);
  var since = seenAt();
  historyCalls.forEach(function (c) {
    var li = document.createElement('li');
    var missed = missedHere(c);
    li.className = 'history-item' + (missed ? ' history-missed' : '') +
      (missed && c.started_at_ms > since ? ' history-new' : '');
    li.setAttribute('data-call-id', c.call_id);
    li.setAttribute('data-outcome', String(c.outcome));
    var time = document.createElement('time');
    time.className = 'history-time';
    time.dateTime = new Date(c.started_at_ms).toISOString();
    time.textContent = formatWhen(c.started_at_ms);
    var door = document.createElement('span');
    door.className = 'history-door';
    door.textContent = (c.door && (c.door.name || c.door.id)) || 'Door';
    var outcome = document.createElement('span');
    outcome.className = 'history-outcome';
    outcome.textContent = describeOutcome(c);
    if (c.door_opened) {
      var opened = document.createElement('span');
      opened.className = 'history-opened';
      opened.textContent = 'Door opened';
      outcome.appendChild(opened);
    }
    li.appendChild(time);
    li.appendChild(door);
    li.appendChild(outcome);
    list.appendChild(li);
  });
  ui.historyEmpty.hidden = historyCalls.length > 0;
  ui.history.hidden = false;
  watchHistorySeen();
}

// The app icon's badge: missed calls since the resident last saw the list.
function updateBadge() {
  var since = seenAt();
  var n = historyCalls.filter(function (c) { return missedHere(c) && c.started_at_ms > since; }).length;
  intercom.missedUnseen = n;
  try {
    if (n > 0 && navigator.setAppBadge) navigator.setAppBadge(n).catch(function () {});
    else if (n === 0 && navigator.clearAppBadge) navigator.clearAppBadge().catch(function () {});
  } catch (e) { /* not supported here */ }
}

// The list counts as seen once it has been on screen, the page in front,
// for a moment. The mark is the newest call's own time (the hub's clock).
var SEEN_DWELL_MS = 1500;
var historyObserver = null;
var historyOnScreen = false;

function watchHistorySeen() {
  if (!historyObserver && window.IntersectionObserver) {
    historyObserver = new IntersectionObserver(function (entries) {
      historyOnScreen = entries.some(function (e) { return e.isIntersecting; });
      scheduleSeen();
    });
    historyObserver.observe(ui.history);
  }
  scheduleSeen();
}

function scheduleSeen() {
  if (seenTimer) { clearTimeout(seenTimer); seenTimer = null; }
  if (!historyOnScreen || document.visibilityState !== 'visible' || historyCalls.length === 0) return;
  seenTimer = setTimeout(function () {
    seenTimer = null;
    var newest = historyCalls[0].started_at_ms;
    if (newest <= seenAt()) return;
    try { localStorage.setItem(seenKey(), String(newest)); } catch (e) { /* ignore */ }
    record('history-seen', { at_ms: newest });
    updateBadge();
    // The "new" marks stay until the list is drawn again.
  }, SEEN_DWELL_MS);
}

document.addEventListener('visibilitychange', scheduleSeen);

// ---------------------------------------------------------------- wiring
ui.accept.addEventListener('click', function () { dispatch({ type: 'accept' }); });
ui.decline.addEventListener('click', function () { dispatch({ type: 'decline' }); });
ui.hangup.addEventListener('click', function () { dispatch({ type: 'hangup', reason: 'normal' }); });
ui.openDoor.addEventListener('click', function () { openDoor(); });
ui.doorCallButton.addEventListener('click', function () { callDoor(); });
ui.mute.addEventListener('click', function () { dispatch({ type: 'toggleMute' }); });
ui.soundTest.addEventListener('click', function () { media.ensureAudioContext(); media.ringOnce(); });
ui.forget.addEventListener('click', function () {
  forgetToken();
  signal.close();
  setConnection('offline', 'Not signed in');
  showLogin();
});
ui.tokenForm.addEventListener('submit', function (ev) {
  ev.preventDefault();
  var t = ui.tokenInput.value.trim();
  if (!t) return;
  try { localStorage.setItem(STORAGE_KEY, t); } catch (e) { /* ignore */ }
  urlToken = t;
  ui.tokenInput.value = '';
  signal.restart();
});
window.addEventListener('online', function () { signal.online(); });

// Opening the https address carries the sign-in along, in the fragment
// (never sent to a server), so the resident does not type it again.
ui.micNoticeHref.addEventListener('click', function (ev) {
  var t = readToken();
  if (!t || !/^https:\/\//i.test(ui.micNoticeHref.href)) return;
  ev.preventDefault();
  var u = new URL(ui.micNoticeHref.href);
  u.hash = 'token=' + encodeURIComponent(t);
  location.assign(u.toString());
});

setState('idle', 'Waiting for a visitor', null, null);
if (!media.microphoneAvailable()) showMicNotice('insecure');
registerServiceWorker();
if (urlCallAction) requestCallAction(urlCallAction.type, urlCallAction.callId);
loadClientInfo();
signal.connect();
