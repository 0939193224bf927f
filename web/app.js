// intercomd answering page: rings when a visitor presses the door's call
// button, answers with two-way WebRTC audio. Protocol: docs/signaling.md.
// Plain browser JavaScript, no build step, no external resources.
(function () {
  'use strict';

  var PROTOCOL_VERSION = 1;
  var PING_INTERVAL_MS = 10000;
  var RECONNECT_INITIAL_MS = 1000;
  var RECONNECT_MAX_MS = 5000;
  var RECONNECT_JITTER = 0.2; // +/- 20 %
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
  var ws = null;
  var wsGeneration = 0;
  var connected = false;        // welcome received on the current socket
  var reconnectAttempt = 0;
  var reconnectTimer = null;
  var pingTimer = null;
  var stopReconnecting = false;
  var iceServers = [];
  var clientInfo = null;        // /client.json, once fetched

  var call = null;              // the current call, see newCall()
  var elapsedTimer = null;

  var audioCtx = null;
  var ringTimer = null;
  var remoteAnalyser = null;
  var remoteSourceNode = null;

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
    remoteLevel: remoteLevel,
    remoteDominantHz: remoteDominantHz,
    send: function (msg) { return send(msg); },
    accept: function () { return acceptCall(); },
    decline: function () { return declineCall(); },
    hangup: function () { return hangupCall('normal'); },
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

  // A copy of a signaling message safe to keep: no token, SDP shortened.
  function summarize(msg) {
    var out = {};
    for (var k in msg) {
      if (!Object.prototype.hasOwnProperty.call(msg, k) || k === 'token') continue;
      if (k === 'subscription' || k === 'endpoint') { out[k] = '<push endpoint>'; continue; }
      out[k] = (k === 'sdp' && typeof msg[k] === 'string') ? '<' + msg[k].length + ' bytes>' : msg[k];
    }
    return out;
  }

  function setError(code, message) {
    intercom.lastError = { code: code || 'error', message: message || '', at: performance.now() };
    record('error', { code: intercom.lastError.code, message: intercom.lastError.message });
  }

  // ---------------------------------------------------------------- UI
  function setConnection(state, label) {
    intercom.connection = state;
    ui.conn.className = 'conn conn-' + state;
    ui.connLabel.textContent = label;
  }

  function setState(state, message) {
    if (intercom.state !== state) record('state', { state: state, call_id: call ? call.id : null });
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
    document.title = state === 'ringing' && call ? 'Ringing: ' + call.doorName : 'Door intercom';
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

  // ---------------------------------------------------------------- sound
  function ensureAudioContext() {
    if (!audioCtx) {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return null;
      audioCtx = new Ctx();
    }
    if (audioCtx.state === 'suspended') audioCtx.resume().catch(function () {});
    return audioCtx;
  }

  function beep(ctx, at, freq, duration) {
    var osc = ctx.createOscillator();
    var gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0, at);
    gain.gain.linearRampToValueAtTime(0.25, at + 0.02);
    gain.gain.setValueAtTime(0.25, at + duration - 0.03);
    gain.gain.linearRampToValueAtTime(0, at + duration);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + duration + 0.01);
  }

  function ringOnce() {
    var ctx = ensureAudioContext();
    if (!ctx) return;
    var t = ctx.currentTime + 0.02;
    beep(ctx, t, 880, 0.35);
    beep(ctx, t + 0.45, 660, 0.35);
    if (navigator.vibrate) { try { navigator.vibrate([300, 150, 300]); } catch (e) { /* ignore */ } }
  }

  function startRinging() {
    stopRinging();
    ringOnce();
    ringTimer = setInterval(ringOnce, 2000);
  }

  function stopRinging() {
    if (ringTimer) clearInterval(ringTimer);
    ringTimer = null;
  }

  // ---------------------------------------------------------------- analysis
  function attachAnalyser(stream) {
    detachAnalyser();
    var ctx = ensureAudioContext();
    if (!ctx) return;
    try {
      remoteSourceNode = ctx.createMediaStreamSource(stream);
      remoteAnalyser = ctx.createAnalyser();
      remoteAnalyser.fftSize = 8192;
      remoteAnalyser.smoothingTimeConstant = 0.2;
      remoteAnalyser.minDecibels = -120;
      remoteAnalyser.maxDecibels = 0;
      remoteSourceNode.connect(remoteAnalyser); // analysis only; the <audio> element plays it
    } catch (e) {
      setError('analyser', String(e && e.message || e));
    }
  }

  function detachAnalyser() {
    try { if (remoteSourceNode) remoteSourceNode.disconnect(); } catch (e) { /* ignore */ }
    remoteSourceNode = null;
    remoteAnalyser = null;
  }

  // RMS level (0..1) of the remote audio; null without a remote stream.
  function remoteLevel() {
    if (!remoteAnalyser) return null;
    var buf = new Float32Array(remoteAnalyser.fftSize);
    remoteAnalyser.getFloatTimeDomainData(buf);
    var sum = 0;
    for (var i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
    return Math.sqrt(sum / buf.length);
  }

  // Peak frequency (Hz) of the remote audio between 100 and 4000 Hz, or null
  // when there is no remote stream or it is silent.
  function remoteDominantHz() {
    if (!remoteAnalyser || !audioCtx) return null;
    var bins = new Float32Array(remoteAnalyser.frequencyBinCount);
    remoteAnalyser.getFloatFrequencyData(bins);
    var binHz = audioCtx.sampleRate / remoteAnalyser.fftSize;
    var lo = Math.max(1, Math.ceil(100 / binHz));
    var hi = Math.min(bins.length - 2, Math.floor(4000 / binHz));
    var best = -1, bestDb = -Infinity;
    for (var i = lo; i <= hi; i++) {
      if (bins[i] > bestDb) { bestDb = bins[i]; best = i; }
    }
    if (best < 0 || !isFinite(bestDb) || bestDb < -85) return null; // silence
    // Parabolic interpolation between neighbouring bins.
    var a = bins[best - 1], b = bins[best], c = bins[best + 1];
    var denom = a - 2 * b + c;
    var shift = (isFinite(a) && isFinite(c) && denom !== 0) ? 0.5 * (a - c) / denom : 0;
    if (shift > 0.5 || shift < -0.5) shift = 0;
    return Math.round((best + shift) * binHz * 10) / 10;
  }

  // ---------------------------------------------------------------- signaling
  function wsUrl() {
    var u = new URL('ws', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.hash = '';
    u.search = '';
    return u.toString();
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      record('tx-dropped', { type: msg && msg.type, call_id: msg && msg.call_id });
      return false;
    }
    ws.send(JSON.stringify(msg));
    if (msg.type !== 'ping') record('tx', summarize(msg));
    return true;
  }

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

  function connect() {
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; }
    var token = readToken();
    if (!token) {
      setConnection('offline', 'Not signed in');
      showLogin();
      return;
    }
    ui.login.hidden = true;
    stopReconnecting = false;
    var gen = ++wsGeneration;
    setConnection('connecting', reconnectAttempt > 0 ? 'Reconnecting…' : 'Connecting…');
    var sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      setError('ws', String(e && e.message || e));
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      if (gen !== wsGeneration) return;
      console.info('[intercom] socket open, sending hello');
      sock.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, role: 'answerer', token: token, name: navigator.userAgent.slice(0, 64) }));
      record('tx', { type: 'hello', v: PROTOCOL_VERSION, role: 'answerer' });
    };
    sock.onmessage = function (ev) {
      if (gen !== wsGeneration) return;
      if (typeof ev.data !== 'string') return;
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) {
        setError('bad_json', 'unparsable message from hub');
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type !== 'pong') record('rx', summarize(msg));
      handleMessage(msg);
    };
    sock.onclose = function (ev) {
      if (gen !== wsGeneration) return;
      record('close', { code: ev.code, reason: ev.reason });
      console.info('[intercom] socket closed, code ' + ev.code);
      connected = false;
      refreshDoorCall();
      ws = null;
      if (pingTimer) { clearInterval(pingTimer); pingTimer = null; }
      if (ev.code === 4000) {
        stopReconnecting = true;
        setConnection('offline', 'Opened elsewhere');
        showMessage('This flat was opened in another window. Reload to use it here.');
        return;
      }
      if (stopReconnecting) return;
      scheduleReconnect();
    };
    sock.onerror = function () { /* onclose follows */ };
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    var base = Math.min(RECONNECT_MAX_MS, RECONNECT_INITIAL_MS * Math.pow(2, reconnectAttempt));
    var delay = Math.round(base * (1 - RECONNECT_JITTER + Math.random() * 2 * RECONNECT_JITTER));
    reconnectAttempt++;
    setConnection('offline', 'Offline, retrying in ' + Math.ceil(delay / 1000) + ' s');
    record('reconnect', { attempt: reconnectAttempt, delay_ms: delay });
    console.info('[intercom] reconnect attempt ' + reconnectAttempt + ' in ' + delay + ' ms');
    reconnectTimer = setTimeout(function () { reconnectTimer = null; connect(); }, delay);
  }

  function handleMessage(msg) {
    switch (msg.type) {
      case 'welcome': return onWelcome(msg);
      case 'ring': return onRing(msg);
      case 'calling': return onCalling(msg);
      case 'taken': return onTaken(msg);
      case 'cancel': return onCancel(msg);
      case 'offer': return onOffer(msg);
      case 'candidate': return onRemoteCandidate(msg);
      case 'hangup': return onRemoteHangup(msg);
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
    connected = true;
    reconnectAttempt = 0;
    iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
    intercom.answererId = msg.id || null;
    setCallableDoors(msg.doors);
    setConnection('online', 'Connected' + (msg.name ? ' as ' + msg.name : ''));
    console.info('[intercom] connected as ' + (msg.id || '?'));
    if (pingTimer) clearInterval(pingTimer);
    pingTimer = setInterval(function () { send({ type: 'ping' }); }, PING_INTERVAL_MS);
    onWelcomeApp(msg);
  }

  function onError(msg) {
    if (onAppFeatureError(msg)) return;
    setError(msg.code, msg.message);
    if (msg.ref === 'call_door') onCallDoorError(msg);
    console.warn('[intercom] hub error ' + msg.code + (msg.ref ? ' (' + msg.ref + ')' : '') + ': ' + (msg.message || ''));
    if (msg.code === 'auth_failed' || msg.code === 'unsupported_version') {
      stopReconnecting = true;
      setConnection('offline', msg.code === 'auth_failed' ? 'Access denied' : 'Unsupported version');
      if (msg.code === 'auth_failed') {
        forgetToken();
        showLogin('The access token was refused. Enter a valid one.');
      }
    }
  }

  // ---------------------------------------------------------------- calls
  function newCall(id, doorName, group) {
    return {
      id: id, doorName: doorName, group: group,
      accepted: false, pc: null, mic: null, offer: null,
      pendingCandidates: [], remoteDescriptionSet: false,
      micPromise: null, micReady: false, listenOnly: false, ended: false
    };
  }

  function onRing(msg) {
    if (!msg.call_id) return;
    if (call && call.id === msg.call_id) return; // re-announced after a resume
    if (call && (call.accepted || intercom.state !== 'idle')) {
      record('ignored-ring', { call_id: msg.call_id, busy_with: call.id });
      return;
    }
    var doorName = (msg.door && (msg.door.name || msg.door.id)) || 'Door';
    call = newCall(msg.call_id, doorName, msg.group);
    intercom.callId = call.id;
    intercom.doorName = doorName;
    intercom.ringAtEpoch = performance.timeOrigin + performance.now();
    intercom.firstAudioAt = null;
    intercom.firstAudioAtEpoch = null;
    intercom.dataChannel = null;
    ui.doorName.textContent = doorName;
    setState('ringing', 'Someone is at the door');
    console.info('[intercom] ring from ' + doorName + ' call_id=' + call.id);
    if (runPendingCallAction()) return;
    if (autoAccept) { acceptCall(); return; }
    startRinging();
  }

  function onTaken(msg) {
    if (!call || call.id !== msg.call_id) return;
    var by = msg.by || 'someone else';
    endCall('Answered by ' + by, { sendHangup: false });
  }

  function onCancel(msg) {
    if (!call || call.id !== msg.call_id) return;
    endCall(call.accepted ? 'Call ended' : missedCallMessage(), { sendHangup: false });
  }

  function onRemoteHangup(msg) {
    if (!call || call.id !== msg.call_id) return;
    console.info('[intercom] remote hangup call_id=' + call.id + ' reason=' + (msg.reason || '?'));
    endCall(msg.reason === 'busy' ? 'The door is busy' : 'Call ended', { sendHangup: false });
  }

  function audioConstraints() {
    var on = !rawAudio;
    return { audio: { echoCancellation: on, noiseSuppression: on, autoGainControl: on }, video: false };
  }

  // ---------------------------------------------------------------- microphone
  // Browsers give the microphone only to pages opened over https (or on the
  // same machine). Without it the resident still answers, listens and opens
  // the door: the call goes on listen-only.
  function microphoneAvailable() {
    return !!(window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  }

  // Resolves to the microphone's stream, or null (never rejects).
  function requestMicrophone() {
    if (!microphoneAvailable()) {
      showMicNotice('insecure');
      return Promise.resolve(null);
    }
    intercom.micRequests++;
    var p;
    try {
      p = navigator.mediaDevices.getUserMedia(audioConstraints());
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.then(function (stream) {
      if (intercom.micNotice && intercom.micNotice !== 'insecure') hideMicNotice();
      return stream;
    }, function (err) {
      var name = (err && err.name) || 'Error';
      setError('microphone', name + ': ' + (err && err.message || ''));
      console.warn('[intercom] microphone unavailable (' + name + '); answering listen-only');
      showMicNotice(name === 'NotFoundError' || name === 'OverconstrainedError' ? 'missing'
        : name === 'NotReadableError' || name === 'AbortError' ? 'busy' : 'denied');
      return null;
    });
  }

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

  function acceptCall() {
    if (!call || intercom.state !== 'ringing') return false;
    stopRinging();
    ensureAudioContext(); // inside the click: lets audio play on strict browsers
    var c = call;
    c.accepted = true;
    setState('connecting', 'Connecting…');
    send({ type: 'accept', call_id: c.id });
    c.micPromise = requestMicrophone().then(function (stream) {
      if (c.ended) { if (stream) stream.getTracks().forEach(function (t) { t.stop(); }); return null; }
      c.mic = stream;
      c.micReady = true;
      c.listenOnly = !stream;
      intercom.listenOnly = c.listenOnly;
      applyMute();
      if (c.offer) processOffer(c);
      return stream;
    });
    return true;
  }

  function declineCall() {
    if (!call || intercom.state !== 'ringing') return false;
    send({ type: 'decline', call_id: call.id });
    endCall('Declined', { sendHangup: false });
    return true;
  }

  function hangupCall(reason) {
    if (!call || !call.accepted) return false;
    endCall('Call ended', { sendHangup: true, reason: reason || 'normal' });
    return true;
  }

  function onOffer(msg) {
    if (!call || call.id !== msg.call_id || !call.accepted) {
      record('ignored-offer', { call_id: msg.call_id });
      return;
    }
    if (typeof msg.sdp !== 'string') return;
    if (call.pc) {
      // A renegotiation on the existing connection.
      renegotiate(call, msg.sdp);
      return;
    }
    call.offer = msg.sdp;
    if (call.micReady) processOffer(call);
    // otherwise the microphone promise picks it up
  }

  // How long a failed connection waits for the door's recovery offer.
  var FAILED_GRACE_MS = 30000;

  function processOffer(c) {
    if (c.pc || c.ended) return;
    var pc;
    try {
      pc = new RTCPeerConnection({ iceServers: iceServers });
    } catch (e) {
      setError('peer_connection', String(e && e.message || e));
      endCall('Call failed', { sendHangup: true, reason: 'error' });
      return;
    }
    intercom.peerConnections++;
    c.pc = pc;
    if (c.mic) c.mic.getAudioTracks().forEach(function (track) { pc.addTrack(track, c.mic); });

    pc.onicecandidate = function (ev) {
      if (c.ended) return;
      send({ type: 'candidate', call_id: c.id, candidate: ev.candidate ? ev.candidate.toJSON() : null });
    };
    pc.ontrack = function (ev) {
      var stream = (ev.streams && ev.streams[0]) || new MediaStream([ev.track]);
      ui.audio.srcObject = stream;
      var p = ui.audio.play();
      if (p && p.catch) p.catch(function (e) { setError('autoplay', e && e.name); });
      attachAnalyser(stream);
      var onFirstAudio = function () {
        if (intercom.firstAudioAt === null && !c.ended) {
          intercom.firstAudioAt = performance.now();
          intercom.firstAudioAtEpoch = performance.timeOrigin + intercom.firstAudioAt;
          record('first-audio', { call_id: c.id });
        }
      };
      if (!ev.track.muted) onFirstAudio();
      ev.track.addEventListener('unmute', onFirstAudio, { once: true });
    };
    pc.ondatachannel = function (ev) {
      record('datachannel', { label: ev.channel.label });
      if (ev.channel.label !== 'door') return;
      intercom.dataChannel = ev.channel;
      c.dataChannel = ev.channel;
      ev.channel.onopen = function () {
        record('datachannel-open', { label: ev.channel.label });
        if (!c.ended) ui.openDoor.disabled = false;
      };
      ev.channel.onclose = function () { ui.openDoor.disabled = true; };
      ev.channel.onmessage = function (m) {
        record('datachannel-message', { size: typeof m.data === 'string' ? m.data.length : 0 });
        onDoorMessage(c, m.data);
      };
    };
    pc.onconnectionstatechange = function () {
      if (c.ended) return;
      var st = pc.connectionState;
      record('pc-state', { state: st, call_id: c.id });
      if (st === 'connected' && intercom.state !== 'in_call') {
        setState('in_call', (c.listenOnly ? 'Listening to ' : 'Talking to ') + c.doorName);
        startElapsed();
      } else if (st === 'failed') {
        // The door station drives recovery (an ICE restart or a new
        // session, sent as a new offer): give it time before giving up.
        record('pc-failed-waiting', { call_id: c.id, grace_ms: FAILED_GRACE_MS });
        setTimeout(function () {
          if (!c.ended && c.pc === pc && pc.connectionState === 'failed') {
            endCall('Call failed: no audio path', { sendHangup: true, reason: 'failed' });
          }
        }, FAILED_GRACE_MS);
      }
    };

    pc.setRemoteDescription({ type: 'offer', sdp: c.offer }).then(function () {
      c.remoteDescriptionSet = true;
      return flushPendingCandidates(c);
    }).then(function () {
      // Without a microphone: receive the door's audio, send none.
      if (!c.mic) {
        pc.getTransceivers().forEach(function (t) {
          if (t.receiver && t.receiver.track && t.receiver.track.kind === 'audio') t.direction = 'recvonly';
        });
      }
      return pc.createAnswer();
    }).then(function (answer) {
      return pc.setLocalDescription(answer);
    }).then(function () {
      if (c.ended) return;
      send({ type: 'answer', call_id: c.id, sdp: pc.localDescription.sdp });
    }).catch(function (err) {
      setError('negotiation', err && err.name + ': ' + err.message);
      console.warn('[intercom] could not answer the offer: ' + (err && err.message));
      if (call === c) endCall('Call failed', { sendHangup: true, reason: 'error' });
    });
  }

  function dtlsFingerprint(sdp) {
    var m = /a=fingerprint:(\S+ \S+)/.exec(sdp || '');
    return m ? m[1].toLowerCase() : null;
  }

  function renegotiate(c, sdp) {
    var pc = c.pc;
    var current = pc.remoteDescription ? dtlsFingerprint(pc.remoteDescription.sdp) : null;
    if (current !== dtlsFingerprint(sdp)) {
      // A new session from the door (its secure handshake stalled): the
      // old connection cannot carry it, so build a new one. The microphone
      // stays open.
      record('media-renewed', { call_id: c.id });
      c.pc = null;
      c.remoteDescriptionSet = false;
      c.pendingCandidates = [];
      c.dataChannel = null;
      intercom.dataChannel = null;
      ui.openDoor.disabled = true;
      try { pc.close(); } catch (e) { /* ignore */ }
      c.offer = sdp;
      processOffer(c);
      return;
    }
    // Same session, new ICE credentials: an ICE restart.
    record('ice-restart', { call_id: c.id });
    pc.setRemoteDescription({ type: 'offer', sdp: sdp }).then(function () {
      return pc.createAnswer();
    }).then(function (answer) {
      return pc.setLocalDescription(answer);
    }).then(function () {
      send({ type: 'answer', call_id: c.id, sdp: pc.localDescription.sdp });
    }).catch(function (err) {
      setError('negotiation', err && err.name + ': ' + err.message);
    });
  }

  function flushPendingCandidates(c) {
    var pending = c.pendingCandidates;
    c.pendingCandidates = [];
    if (pending.length > 0) console.log('Processing ' + pending.length + ' pending ICE candidates');
    record('pending-candidates', { count: pending.length, call_id: c.id });
    return pending.reduce(function (p, cand) {
      return p.then(function () { return addRemoteCandidate(c, cand); });
    }, Promise.resolve());
  }

  function addRemoteCandidate(c, cand) {
    var pc = c.pc;
    if (!pc) return Promise.resolve();
    var p;
    try {
      p = cand === null ? pc.addIceCandidate() : pc.addIceCandidate(cand);
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.then(function () {
      record('remote-candidate', { call_id: c.id, end: cand === null });
    }, function (err) {
      // An unresolvable .local candidate or a malformed one: skip it.
      record('remote-candidate-error', { call_id: c.id, error: err && err.name });
      console.warn('[intercom] skipped a remote ICE candidate: ' + (err && err.message));
    });
  }

  function onRemoteCandidate(msg) {
    if (!call || call.id !== msg.call_id || !call.accepted) return;
    var cand = msg.candidate === undefined ? null : msg.candidate;
    if (cand !== null && (typeof cand !== 'object' || typeof cand.candidate !== 'string')) {
      record('remote-candidate-error', { call_id: call.id, error: 'malformed' });
      return;
    }
    if (!call.pc || !call.remoteDescriptionSet) {
      call.pendingCandidates.push(cand);
      return;
    }
    addRemoteCandidate(call, cand);
  }

  // ---------------------------------------------------------------- talk to the door
  // A resident with the permission calls the door (docs/signaling.md,
  // "A resident calls the door"): the hub lists the doors it may call in
  // `welcome`; the call then runs like an answered one (the door offers).
  var callableDoors = [];

  function setCallableDoors(doors) {
    callableDoors = (Array.isArray(doors) ? doors : []).filter(function (d) {
      return d && typeof d.id === 'string';
    });
    intercom.callableDoors = callableDoors.map(function (d) { return { id: d.id, name: d.name || d.id }; });
    var select = ui.doorCallTarget;
    while (select.firstChild) select.removeChild(select.firstChild);
    callableDoors.forEach(function (d) {
      var opt = document.createElement('option');
      opt.value = d.id;
      opt.textContent = d.name || d.id;
      select.appendChild(opt);
    });
    // Several doors: the resident chooses; one door needs no choice.
    select.hidden = callableDoors.length < 2;
    ui.doorCallTargetLabel.hidden = select.hidden;
    refreshDoorCall();
  }

  // The control only for permitted answerers, only while nothing else goes on.
  function refreshDoorCall() {
    if (!ui.doorCall) return;
    ui.doorCall.hidden = !(callableDoors.length > 0 && connected && intercom.state === 'idle' && !call);
  }

  function newCallDoorId() {
    var bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return 'r-' + Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  function callDoor(doorId) {
    if (call || !connected || intercom.state !== 'idle' || callableDoors.length === 0) return null;
    var id = doorId || ui.doorCallTarget.value || callableDoors[0].id;
    var door = null;
    callableDoors.forEach(function (d) { if (d.id === id) door = d; });
    if (!door) return null;
    ensureAudioContext(); // inside the click: lets audio play on strict browsers
    var c = newCall(newCallDoorId(), door.name || door.id, null);
    c.accepted = true; // our own call: the door's offer is for us
    c.outgoing = true;
    call = c;
    intercom.callId = c.id;
    intercom.doorName = c.doorName;
    intercom.ringAtEpoch = performance.timeOrigin + performance.now();
    intercom.firstAudioAt = null;
    intercom.firstAudioAtEpoch = null;
    intercom.dataChannel = null;
    ui.doorName.textContent = c.doorName;
    setState('connecting', 'Calling ' + c.doorName + '…');
    send({ type: 'call_door', call_id: c.id, door: door.id });
    intercom.micRequests++;
    c.micPromise = navigator.mediaDevices.getUserMedia(audioConstraints()).then(function (stream) {
      if (c.ended) { stream.getTracks().forEach(function (t) { t.stop(); }); return null; }
      c.mic = stream;
      applyMute();
      return stream;
    });
    c.micPromise.then(function () {
      if (!c.ended && c.offer) processOffer(c);
    }, function (err) {
      setError('microphone', err && err.name + ': ' + err.message);
      if (call === c) endCall('Microphone unavailable', { sendHangup: true, reason: 'error' });
    });
    console.info('[intercom] calling door ' + door.id + ' call_id=' + c.id);
    return c.id;
  }

  function onCalling(msg) {
    if (!call || call.id !== msg.call_id || !call.outgoing) return;
    if (msg.door && msg.door.name) {
      call.doorName = msg.door.name;
      intercom.doorName = msg.door.name;
      ui.doorName.textContent = msg.door.name;
    }
    if (intercom.state === 'connecting') showMessage('Connecting to ' + call.doorName + '…');
  }

  var CALL_DOOR_REFUSALS = {
    not_permitted: 'You may not call the door',
    door_offline: 'The door is offline',
    busy: 'The door is busy',
    unknown_peer: 'No such door'
  };

  function onCallDoorError(msg) {
    if (!call || !call.outgoing || (msg.call_id && msg.call_id !== call.id)) return;
    call.accepted = false; // the hub kept no call: nothing to hang up
    endCall(CALL_DOOR_REFUSALS[msg.code] || 'The door could not be called', { sendHangup: false });
  }

  // ---------------------------------------------------------------- door
  // Door opening travels on the call's data channel (DTLS), never over
  // signaling: docs/signaling.md, "Door opening".
  function newNonce() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  function openDoor() {
    var c = call;
    if (!c || !c.dataChannel || c.dataChannel.readyState !== 'open') return null;
    var nonce = newNonce();
    c.dataChannel.send(JSON.stringify({ type: 'open', nonce: nonce }));
    record('door-open-sent', { call_id: c.id, nonce: nonce });
    ui.doorStatus.textContent = 'Opening…';
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

  function onDoorMessage(c, data) {
    var msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (!msg || msg.type !== 'open_result' || c.ended) return;
    intercom.lastDoorResult = msg;
    record('door-result', { granted: !!msg.granted, reason: msg.reason || null, nonce: msg.nonce });
    if (msg.granted) {
      var secs = Math.round((msg.pulse_ms || 0) / 1000);
      ui.doorStatus.textContent = 'Door opened' + (secs ? ' for ' + secs + ' s' : '');
    } else {
      ui.doorStatus.textContent = 'Not opened: ' + (DOOR_REASONS[msg.reason] || msg.reason || 'refused');
    }
  }

  function applyMute() {
    var muted = intercom.muted;
    if (call && call.mic) call.mic.getAudioTracks().forEach(function (t) { t.enabled = !muted; });
    ui.mute.textContent = muted ? 'Unmute' : 'Mute';
    ui.mute.setAttribute('aria-pressed', muted ? 'true' : 'false');
    ui.mute.setAttribute('aria-label', muted ? 'Unmute microphone' : 'Mute microphone');
    ui.mute.classList.toggle('active', muted);
    ui.mute.disabled = !!(call && call.listenOnly);
  }

  function endCall(message, opts) {
    var c = call;
    stopRinging();
    stopElapsed();
    if (c) {
      c.ended = true;
      if (opts && opts.sendHangup && c.accepted) {
        send({ type: 'hangup', call_id: c.id, reason: opts.reason || 'normal' });
      }
      if (c.pc) { try { c.pc.close(); } catch (e) { /* ignore */ } }
      if (c.mic) c.mic.getTracks().forEach(function (t) { t.stop(); });
      record('call-ended', { call_id: c.id, message: message });
    }
    detachAnalyser();
    ui.audio.srcObject = null;
    call = null;
    intercom.muted = false;
    intercom.listenOnly = false;
    applyMute();
    setState('idle', message);
    if (c) requestHistory();
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
  var historySupported = null;    // false once the hub says it has no history
  var historyCalls = [];
  var seenTimer = null;
  var pendingCallAction = null;   // { type, callId, until }
  var CALL_ACTION_TTL_MS = 60000;
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

  // ---- Answer/Decline from a notification
  function requestCallAction(type, callId) {
    pendingCallAction = { type: type, callId: callId, until: Date.now() + CALL_ACTION_TTL_MS };
    record('call-action', { action: type, call_id: callId });
    runPendingCallAction();
    // Right after welcome the hub announces a call still ringing; none by
    // then means it is over.
    if (pendingCallAction && connected) setTimeout(expireCallAction, 5000);
  }

  // Acts when the call is ringing here; true when it did.
  function runPendingCallAction() {
    var a = pendingCallAction;
    if (!a) return false;
    if (Date.now() > a.until) { pendingCallAction = null; return false; }
    if (!call || call.id !== a.callId || intercom.state !== 'ringing') return false;
    pendingCallAction = null;
    record('call-action-run', { action: a.type, call_id: a.callId });
    return a.type === 'answer' ? acceptCall() : declineCall();
  }

  function expireCallAction() {
    if (!pendingCallAction || (call && call.id === pendingCallAction.callId)) return;
    pendingCallAction = null;
    if (intercom.state === 'idle') showMessage('That call has already ended');
  }

  function onWelcomeApp(msg) {
    setPushOffer(msg.push);
    requestHistory();
    if (pendingCallAction) setTimeout(expireCallAction, 5000);
  }

  function onAppFeatureError(msg) {
    var ref = msg.ref;
    if (ref === 'get_history' && msg.code === 'unknown_type') {
      // A hub without call history: the page tells missed calls as before.
      historySupported = false;
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
    return send({
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
      send({ type: 'push_unsubscribe', endpoint: sub.endpoint });
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
  function requestHistory() {
    if (historySupported === false || !connected) return;
    send({ type: 'get_history', limit: 50 });
  }

  function missedCallMessage() {
    // The history tells of missed calls; a hub without one, this line.
    return historySupported === false ? 'Missed call' : 'Waiting for a visitor';
  }

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
    historySupported = true;
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
  ui.accept.addEventListener('click', function () { acceptCall(); });
  ui.decline.addEventListener('click', function () { declineCall(); });
  ui.hangup.addEventListener('click', function () { hangupCall('normal'); });
  ui.openDoor.addEventListener('click', function () { openDoor(); });
  ui.doorCallButton.addEventListener('click', function () { callDoor(); });
  ui.mute.addEventListener('click', function () {
    intercom.muted = !intercom.muted;
    applyMute();
    record('mute', { muted: intercom.muted });
  });
  ui.soundTest.addEventListener('click', function () { ensureAudioContext(); ringOnce(); });
  ui.forget.addEventListener('click', function () {
    forgetToken();
    stopReconnecting = true;
    wsGeneration++;
    if (ws) { try { ws.close(1000); } catch (e) { /* ignore */ } }
    ws = null;
    if (pingTimer) { clearInterval(pingTimer); pingTimer = null; }
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; }
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
    reconnectAttempt = 0;
    if (ws) { wsGeneration++; try { ws.close(1000); } catch (e) { /* ignore */ } ws = null; }
    connect();
  });
  window.addEventListener('online', function () {
    if (!ws && !stopReconnecting && reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; connect(); }
  });

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

  setState('idle', 'Waiting for a visitor');
  if (!microphoneAvailable()) showMicNotice('insecure');
  registerServiceWorker();
  if (urlCallAction) requestCallAction(urlCallAction.type, urlCallAction.callId);
  loadClientInfo();
  connect();
})();
