// intercomd answering page: sound and WebRTC. The ring tone, the
// microphone, each call's peer connection and data channel, and the
// analysis of the door's audio the tests read. It decides nothing about the
// call: app.js tells it what to do (from call.js's effects) and it reports
// back what happened as call.js events through `dispatch`.

// hooks: { intercom, audio (the <audio> element), openDoorButton, rawAudio,
//          iceServers() , send(msg), record(kind, data), setError(code, msg),
//          dispatch(event), micNotice(kind|null), onDoorResult(msg) }
export function createMedia(hooks) {
  var intercom = hooks.intercom;
  var audioCtx = null;
  var ringTimer = null;
  var sessions = new Map();     // call id -> session, see open()
  var analysis = createAnalysis(ensureAudioContext, function (msg) { hooks.setError('analyser', msg); });

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

  // ---------------------------------------------------------------- microphone
  // Browsers give the microphone only to pages opened over https (or on the
  // same machine). Without it the resident still answers, listens and opens
  // the door: the call goes on listen-only.
  function microphoneAvailable() {
    return !!(window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  }

  function audioConstraints() {
    var on = !hooks.rawAudio;
    return { audio: { echoCancellation: on, noiseSuppression: on, autoGainControl: on }, video: false };
  }

  // To answer: resolves to the microphone's stream, or null (never rejects).
  function requestMicrophone() {
    if (!microphoneAvailable()) {
      hooks.micNotice('insecure');
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
      if (intercom.micNotice && intercom.micNotice !== 'insecure') hooks.micNotice(null);
      return stream;
    }, function (err) {
      var name = (err && err.name) || 'Error';
      hooks.setError('microphone', name + ': ' + (err && err.message || ''));
      console.warn('[intercom] microphone unavailable (' + name + '); answering listen-only');
      hooks.micNotice(name === 'NotFoundError' || name === 'OverconstrainedError' ? 'missing'
        : name === 'NotReadableError' || name === 'AbortError' ? 'busy' : 'denied');
      return null;
    });
  }

  // A call's microphone (mode 'answer': listen-only without one; 'call':
  // our own call needs it). Reports micReady or micFailed.
  function getMic(callId, mode) {
    var s = open(callId);
    var stopIfEnded = function (stream) {
      if (!s.closed) return false;
      if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
      return true;
    };
    if (mode === 'answer') {
      requestMicrophone().then(function (stream) {
        if (stopIfEnded(stream)) return;
        s.mic = stream;
        hooks.dispatch({ type: 'micReady', callId: callId, listenOnly: !stream });
      });
      return;
    }
    intercom.micRequests++;
    var p;
    try {
      p = navigator.mediaDevices.getUserMedia(audioConstraints());
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(function (stream) {
      if (stopIfEnded(stream)) return;
      s.mic = stream;
      hooks.dispatch({ type: 'micReady', callId: callId, listenOnly: false });
    }, function (err) {
      hooks.setError('microphone', err && err.name + ': ' + err.message);
      hooks.dispatch({ type: 'micFailed', callId: callId });
    });
  }

  function applyMute(callId, muted) {
    var s = callId ? sessions.get(callId) : null;
    if (s && s.mic) s.mic.getAudioTracks().forEach(function (t) { t.enabled = !muted; });
  }

  // ---------------------------------------------------------------- sessions
  // A call's media: its microphone, its peer connection (gen counts the
  // connections built for it), the door's candidates that came before the
  // connection could take them, the door's data channel.
  function open(callId) {
    var s = sessions.get(callId);
    if (!s) {
      s = { id: callId, closed: false, mic: null, pc: null, gen: 0, pending: [], remoteSet: false, dataChannel: null };
      sessions.set(callId, s);
    }
    return s;
  }

  function end(callId) {
    var s = callId ? sessions.get(callId) : null;
    if (s) {
      sessions.delete(callId);
      s.closed = true;
      if (s.pc) { try { s.pc.close(); } catch (e) { /* ignore */ } }
      if (s.mic) s.mic.getTracks().forEach(function (t) { t.stop(); });
    }
    analysis.detach();
    hooks.audio.srcObject = null;
  }

  // Answers the door's offer on a new peer connection.
  function start(callId, gen, sdp) {
    var c = sessions.get(callId);
    if (!c || c.closed || c.pc) return;
    var pc;
    try {
      pc = new RTCPeerConnection({ iceServers: hooks.iceServers() });
    } catch (e) {
      hooks.setError('peer_connection', String(e && e.message || e));
      hooks.dispatch({ type: 'mediaError', callId: callId });
      return;
    }
    intercom.peerConnections++;
    c.pc = pc;
    c.gen = gen;
    if (c.mic) c.mic.getAudioTracks().forEach(function (track) { pc.addTrack(track, c.mic); });

    pc.onicecandidate = function (ev) {
      if (c.closed) return;
      hooks.send({ type: 'candidate', call_id: c.id, candidate: ev.candidate ? ev.candidate.toJSON() : null });
    };
    pc.ontrack = function (ev) {
      var stream = (ev.streams && ev.streams[0]) || new MediaStream([ev.track]);
      hooks.audio.srcObject = stream;
      var p = hooks.audio.play();
      if (p && p.catch) p.catch(function (e) { hooks.setError('autoplay', e && e.name); });
      analysis.attach(stream);
      var onFirstAudio = function () {
        if (intercom.firstAudioAt === null && !c.closed) {
          intercom.firstAudioAt = performance.now();
          intercom.firstAudioAtEpoch = performance.timeOrigin + intercom.firstAudioAt;
          hooks.record('first-audio', { call_id: c.id });
        }
      };
      if (!ev.track.muted) onFirstAudio();
      ev.track.addEventListener('unmute', onFirstAudio, { once: true });
    };
    pc.ondatachannel = function (ev) {
      hooks.record('datachannel', { label: ev.channel.label });
      if (ev.channel.label !== 'door') return;
      intercom.dataChannel = ev.channel;
      c.dataChannel = ev.channel;
      ev.channel.onopen = function () {
        hooks.record('datachannel-open', { label: ev.channel.label });
        if (!c.closed) hooks.openDoorButton.disabled = false;
      };
      ev.channel.onclose = function () { hooks.openDoorButton.disabled = true; };
      ev.channel.onmessage = function (m) {
        hooks.record('datachannel-message', { size: typeof m.data === 'string' ? m.data.length : 0 });
        onDoorMessage(c, m.data);
      };
    };
    pc.onconnectionstatechange = function () {
      if (c.closed) return;
      var st = pc.connectionState;
      hooks.record('pc-state', { state: st, call_id: c.id });
      hooks.dispatch({ type: 'pcState', callId: c.id, gen: gen, state: st });
    };

    pc.setRemoteDescription({ type: 'offer', sdp: sdp }).then(function () {
      c.remoteSet = true;
      if (c.pc === pc) hooks.dispatch({ type: 'remoteSet', callId: c.id, gen: gen, sdp: sdp });
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
      if (c.closed) return;
      hooks.send({ type: 'answer', call_id: c.id, sdp: pc.localDescription.sdp });
    }).catch(function (err) {
      hooks.setError('negotiation', err && err.name + ': ' + err.message);
      console.warn('[intercom] could not answer the offer: ' + (err && err.message));
      hooks.dispatch({ type: 'mediaError', callId: c.id });
    });
  }

  // A new session from the door: a new connection, the microphone stays.
  function renew(callId, gen, sdp) {
    var c = sessions.get(callId);
    if (!c || c.closed) return;
    var pc = c.pc;
    c.pc = null;
    c.remoteSet = false;
    c.pending = [];
    c.dataChannel = null;
    intercom.dataChannel = null;
    hooks.openDoorButton.disabled = true;
    if (pc) { try { pc.close(); } catch (e) { /* ignore */ } }
    start(callId, gen, sdp);
  }

  // Same session, new ICE credentials.
  function restartIce(callId, sdp) {
    var c = sessions.get(callId);
    var pc = c && c.pc;
    if (!pc) return;
    pc.setRemoteDescription({ type: 'offer', sdp: sdp }).then(function () {
      return pc.createAnswer();
    }).then(function (answer) {
      return pc.setLocalDescription(answer);
    }).then(function () {
      hooks.send({ type: 'answer', call_id: c.id, sdp: pc.localDescription.sdp });
    }).catch(function (err) {
      hooks.setError('negotiation', err && err.name + ': ' + err.message);
    });
  }

  function flushPendingCandidates(c) {
    var pending = c.pending;
    c.pending = [];
    if (pending.length > 0) console.log('Processing ' + pending.length + ' pending ICE candidates');
    hooks.record('pending-candidates', { count: pending.length, call_id: c.id });
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
      hooks.record('remote-candidate', { call_id: c.id, end: cand === null });
    }, function (err) {
      // An unresolvable .local candidate or a malformed one: skip it.
      hooks.record('remote-candidate-error', { call_id: c.id, error: err && err.name });
      console.warn('[intercom] skipped a remote ICE candidate: ' + (err && err.message));
    });
  }

  // A door candidate: taken now, or once the connection has the offer.
  function addCandidate(callId, cand) {
    var c = sessions.get(callId);
    if (!c || c.closed) return;
    if (!c.pc || !c.remoteSet) {
      c.pending.push(cand);
      return;
    }
    addRemoteCandidate(c, cand);
  }

  // ---------------------------------------------------------------- door
  // Door opening travels on the call's data channel (DTLS), never over
  // signaling: docs/signaling.md, "Door opening".
  function newNonce() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  // Sends an open request on the call's data channel; its nonce, or null.
  function openDoor(callId) {
    var c = callId ? sessions.get(callId) : null;
    if (!c || !c.dataChannel || c.dataChannel.readyState !== 'open') return null;
    var nonce = newNonce();
    c.dataChannel.send(JSON.stringify({ type: 'open', nonce: nonce }));
    hooks.record('door-open-sent', { call_id: c.id, nonce: nonce });
    return nonce;
  }

  function onDoorMessage(c, data) {
    var msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (!msg || msg.type !== 'open_result' || c.closed) return;
    hooks.onDoorResult(msg);
  }

  return {
    ensureAudioContext: ensureAudioContext,
    ringOnce: ringOnce,
    startRinging: startRinging,
    stopRinging: stopRinging,
    remoteLevel: analysis.level,
    remoteDominantHz: analysis.dominantHz,
    microphoneAvailable: microphoneAvailable,
    getMic: getMic,
    applyMute: applyMute,
    start: start,
    renew: renew,
    restartIce: restartIce,
    addCandidate: addCandidate,
    end: end,
    openDoor: openDoor
  };
}

// The analysis of a peer's audio the tests read: its level and its peak
// frequency. Also used by the browser door of the end-to-end tests
// (tests/e2e/door_page.html), which imports it from the hub's /media.js.
// context(): the AudioContext to analyse in (or null); onError(message).
export function createAnalysis(context, onError) {
  var analyser = null;
  var source = null;

  function attach(stream) {
    detach();
    var ctx = context();
    if (!ctx) return;
    try {
      source = ctx.createMediaStreamSource(stream);
      analyser = ctx.createAnalyser();
      analyser.fftSize = 8192;
      analyser.smoothingTimeConstant = 0.2;
      analyser.minDecibels = -120;
      analyser.maxDecibels = 0;
      source.connect(analyser); // analysis only; an <audio> element plays it
    } catch (e) {
      onError(String(e && e.message || e));
    }
  }

  function detach() {
    try { if (source) source.disconnect(); } catch (e) { /* ignore */ }
    source = null;
    analyser = null;
  }

  // RMS level (0..1) of the audio; null without a stream.
  function level() {
    if (!analyser) return null;
    var buf = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(buf);
    var sum = 0;
    for (var i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
    return Math.sqrt(sum / buf.length);
  }

  // Peak frequency (Hz) of the audio between 100 and 4000 Hz, or null when
  // there is no stream or it is silent.
  function dominantHz() {
    if (!analyser) return null;
    var bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    var binHz = analyser.context.sampleRate / analyser.fftSize;
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

  return { attach: attach, detach: detach, level: level, dominantHz: dominantHz };
}
