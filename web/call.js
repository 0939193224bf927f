// intercomd answering page: the call's state, as a pure function.
//
//   step(state, event) -> { state, effects, result }
//
// No DOM, no WebSocket, no WebRTC, no timers and no clock: whatever the
// page learns (a signaling message, a click, the microphone's answer, the
// peer connection's state, a timer firing, the time) comes in as an event,
// and whatever should happen goes out as effects, plain data the shell
// (app.js) carries out in order:
//
//   { type: 'send', msg }                      a signaling message
//   { type: 'show', state, message, callId, doorName }
//                                              the call panel's state
//   { type: 'message', text }                  the panel's message line only
//   { type: 'newCall', callId, doorName }      a call starts (ring or own)
//   { type: 'doorName', name }                 the door's name changed
//   { type: 'ring' } / { type: 'stopRing' }    the ring tone
//   { type: 'unlockAudio' }                    audio allowed (inside a click)
//   { type: 'getMic', callId, mode }           mode 'answer' (listen-only
//                                              when refused) or 'call'
//   { type: 'startMedia', callId, gen, sdp }   answer the door's offer
//   { type: 'renewMedia', callId, gen, sdp }   a new session: new connection
//   { type: 'restartIce', callId, sdp }        same session, new ICE
//   { type: 'addCandidate', callId, candidate }
//   { type: 'endMedia', callId }               close connection, microphone
//   { type: 'startElapsed' } / { type: 'stopElapsed' }
//   { type: 'mute', muted, listenOnly }        the mute control
//   { type: 'listenOnly', value }
//   { type: 'after', ms, event }               feed `event` back after ms
//   { type: 'record', kind, data }             the page's event log
//   { type: 'log', text }
//
// The state is never changed in place: every step returns a new one.

export const CALL_ACTION_TTL_MS = 60000;
export const CALL_ACTION_WAIT_MS = 5000;
// How long a failed connection waits for the door's recovery offer.
export const FAILED_GRACE_MS = 30000;

export const CALL_DOOR_REFUSALS = {
  not_permitted: 'You may not call the door',
  door_offline: 'The door is offline',
  busy: 'The door is busy',
  unknown_peer: 'No such door'
};

export function initialState(opts) {
  return {
    phase: 'idle',            // idle, ringing, connecting, in_call
    call: null,               // see newCall()
    connected: false,         // welcome received on the current socket
    doors: [],                // doors this resident may call: { id, name }
    history: null,            // false once the hub says it keeps none
    pendingAction: null,      // Answer/Decline from a notification: { type, callId, until }
    muted: false,
    autoAccept: !!(opts && opts.autoAccept)
  };
}

function newCall(id, doorName, group) {
  return {
    id: id, doorName: doorName, group: group === undefined ? null : group,
    accepted: false, outgoing: false,
    micReady: false, listenOnly: false,
    offer: null,              // the door's offer, until media starts on it
    media: null               // { gen, fp, pcState } once media started
  };
}

/** The DTLS fingerprint of an SDP (lower case), or null. */
export function fingerprint(sdp) {
  var m = /a=fingerprint:(\S+ \S+)/.exec(sdp || '');
  return m ? m[1].toLowerCase() : null;
}

/** What ends a call nobody answered here: the history tells of missed calls. */
export function missedCallMessage(s) {
  return s.history === false ? 'Missed call' : 'Waiting for a visitor';
}

/** Whether the "call the door" control shows. */
export function canCallDoor(s) {
  return s.doors.length > 0 && s.connected && s.phase === 'idle' && !s.call;
}

// ---------------------------------------------------------------- machinery
function copy(o) {
  var out = {};
  for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) out[k] = o[k];
  return out;
}

// A step in progress: a private copy of the state, the effects so far.
function Tx(state) {
  this.s = copy(state);
  if (this.s.call) this.s.call = copy(this.s.call);
  if (this.s.call && this.s.call.media) this.s.call.media = copy(this.s.call.media);
  this.effects = [];
  this.result = undefined;
}
Tx.prototype.fx = function (e) { this.effects.push(e); };
Tx.prototype.record = function (kind, data) { this.fx({ type: 'record', kind: kind, data: data }); };
Tx.prototype.send = function (msg) { this.fx({ type: 'send', msg: msg }); };
Tx.prototype.show = function (phase, message) {
  this.s.phase = phase;
  var c = this.s.call;
  this.fx({ type: 'show', state: phase, message: message, callId: c ? c.id : null, doorName: c ? c.doorName : null });
};
Tx.prototype.mine = function (callId) {
  return !!this.s.call && this.s.call.id === callId;
};

// ---------------------------------------------------------------- transitions
function endCall(tx, message, opts) {
  var c = tx.s.call;
  tx.fx({ type: 'stopRing' });
  tx.fx({ type: 'stopElapsed' });
  if (c && opts && opts.sendHangup && c.accepted) {
    tx.send({ type: 'hangup', call_id: c.id, reason: opts.reason || 'normal' });
  }
  tx.fx({ type: 'endMedia', callId: c ? c.id : null });
  if (c) tx.record('call-ended', { call_id: c.id, message: message });
  tx.s.call = null;
  tx.s.muted = false;
  tx.fx({ type: 'listenOnly', value: false });
  tx.fx({ type: 'mute', muted: false, listenOnly: false });
  tx.show('idle', message);
  if (c) requestHistory(tx);
}

function requestHistory(tx) {
  if (tx.s.history === false || !tx.s.connected) return;
  tx.send({ type: 'get_history', limit: 50 });
}

function accept(tx) {
  var c = tx.s.call;
  if (!c || tx.s.phase !== 'ringing') return false;
  tx.fx({ type: 'stopRing' });
  tx.fx({ type: 'unlockAudio' }); // inside the click: lets audio play on strict browsers
  c.accepted = true;
  tx.show('connecting', 'Connecting…');
  tx.send({ type: 'accept', call_id: c.id });
  tx.fx({ type: 'getMic', callId: c.id, mode: 'answer' });
  return true;
}

function decline(tx) {
  var c = tx.s.call;
  if (!c || tx.s.phase !== 'ringing') return false;
  tx.send({ type: 'decline', call_id: c.id });
  endCall(tx, 'Declined', { sendHangup: false });
  return true;
}

function startMedia(tx) {
  var c = tx.s.call;
  if (!c || c.media || !c.offer) return;
  c.media = { gen: 1, fp: null, pcState: null };
  tx.fx({ type: 'startMedia', callId: c.id, gen: 1, sdp: c.offer });
}

// Acts on a notification's Answer/Decline when its call rings here; true
// when it did.
function runPendingAction(tx, now) {
  var a = tx.s.pendingAction;
  if (!a) return false;
  if (now > a.until) { tx.s.pendingAction = null; return false; }
  var c = tx.s.call;
  if (!c || c.id !== a.callId || tx.s.phase !== 'ringing') return false;
  tx.s.pendingAction = null;
  tx.record('call-action-run', { action: a.type, call_id: a.callId });
  return a.type === 'answer' ? accept(tx) : decline(tx);
}

var handlers = {
  // ---- signaling
  online: function (tx, ev) {
    tx.s.connected = true;
    tx.s.doors = (Array.isArray(ev.doors) ? ev.doors : []).filter(function (d) {
      return d && typeof d.id === 'string';
    }).map(function (d) { return { id: d.id, name: d.name || d.id }; });
    requestHistory(tx);
    // Right after welcome the hub announces a call still ringing; none by
    // then means a notification's call is over.
    if (tx.s.pendingAction) tx.fx({ type: 'after', ms: CALL_ACTION_WAIT_MS, event: { type: 'expireAction' } });
  },

  // The call itself goes on over its own connection.
  offline: function (tx) {
    tx.s.connected = false;
  },

  ring: function (tx, ev) {
    var msg = ev.msg || {};
    var c = tx.s.call;
    if (!msg.call_id) return;
    if (c && c.id === msg.call_id) return; // re-announced after a resume
    if (c && (c.accepted || tx.s.phase !== 'idle')) {
      tx.record('ignored-ring', { call_id: msg.call_id, busy_with: c.id });
      return;
    }
    var doorName = (msg.door && (msg.door.name || msg.door.id)) || 'Door';
    c = tx.s.call = newCall(msg.call_id, doorName, msg.group);
    tx.fx({ type: 'newCall', callId: c.id, doorName: doorName });
    tx.show('ringing', 'Someone is at the door');
    tx.fx({ type: 'log', text: 'ring from ' + doorName + ' call_id=' + c.id });
    if (runPendingAction(tx, ev.now)) return;
    if (tx.s.autoAccept) { accept(tx); return; }
    tx.fx({ type: 'ring' });
  },

  taken: function (tx, ev) {
    if (!tx.mine(ev.msg.call_id)) return;
    endCall(tx, 'Answered by ' + (ev.msg.by || 'someone else'), { sendHangup: false });
  },

  cancel: function (tx, ev) {
    if (!tx.mine(ev.msg.call_id)) return;
    endCall(tx, tx.s.call.accepted ? 'Call ended' : missedCallMessage(tx.s), { sendHangup: false });
  },

  remoteHangup: function (tx, ev) {
    if (!tx.mine(ev.msg.call_id)) return;
    tx.fx({ type: 'log', text: 'remote hangup call_id=' + ev.msg.call_id + ' reason=' + (ev.msg.reason || '?') });
    endCall(tx, ev.msg.reason === 'busy' ? 'The door is busy' : 'Call ended', { sendHangup: false });
  },

  offer: function (tx, ev) {
    var msg = ev.msg;
    var c = tx.s.call;
    if (!c || c.id !== msg.call_id || !c.accepted) {
      tx.record('ignored-offer', { call_id: msg.call_id });
      return;
    }
    if (typeof msg.sdp !== 'string') return;
    if (c.media) {
      if (c.media.fp !== fingerprint(msg.sdp)) {
        // A new session from the door (its secure handshake stalled): the
        // old connection cannot carry it, so build a new one. The
        // microphone stays open.
        tx.record('media-renewed', { call_id: c.id });
        c.offer = msg.sdp;
        c.media = { gen: c.media.gen + 1, fp: null, pcState: null };
        tx.fx({ type: 'renewMedia', callId: c.id, gen: c.media.gen, sdp: msg.sdp });
        return;
      }
      // Same session, new ICE credentials: an ICE restart.
      tx.record('ice-restart', { call_id: c.id });
      tx.fx({ type: 'restartIce', callId: c.id, sdp: msg.sdp });
      return;
    }
    c.offer = msg.sdp;
    if (c.micReady) startMedia(tx);
    // otherwise the microphone's answer starts it
  },

  candidate: function (tx, ev) {
    var msg = ev.msg;
    var c = tx.s.call;
    if (!c || c.id !== msg.call_id || !c.accepted) return;
    var cand = msg.candidate === undefined ? null : msg.candidate;
    if (cand !== null && (typeof cand !== 'object' || typeof cand.candidate !== 'string')) {
      tx.record('remote-candidate-error', { call_id: c.id, error: 'malformed' });
      return;
    }
    tx.fx({ type: 'addCandidate', callId: c.id, candidate: cand });
  },

  calling: function (tx, ev) {
    var msg = ev.msg;
    var c = tx.s.call;
    if (!c || c.id !== msg.call_id || !c.outgoing) return;
    if (msg.door && msg.door.name) {
      c.doorName = msg.door.name;
      tx.fx({ type: 'doorName', name: c.doorName });
    }
    if (tx.s.phase === 'connecting') tx.fx({ type: 'message', text: 'Connecting to ' + c.doorName + '…' });
  },

  callDoorRefused: function (tx, ev) {
    var msg = ev.msg;
    var c = tx.s.call;
    if (!c || !c.outgoing || (msg.call_id && msg.call_id !== c.id)) return;
    c.accepted = false; // the hub kept no call: nothing to hang up
    endCall(tx, CALL_DOOR_REFUSALS[msg.code] || 'The door could not be called', { sendHangup: false });
  },

  noHistory: function (tx) { tx.s.history = false; },
  history: function (tx) { tx.s.history = true; },

  // ---- the resident
  accept: function (tx) { tx.result = accept(tx); },
  decline: function (tx) { tx.result = decline(tx); },

  hangup: function (tx, ev) {
    var c = tx.s.call;
    if (!c || !c.accepted) { tx.result = false; return; }
    endCall(tx, 'Call ended', { sendHangup: true, reason: ev.reason || 'normal' });
    tx.result = true;
  },

  // ev.callId: a fresh id from the shell; ev.selected: the chosen door.
  callDoor: function (tx, ev) {
    var s = tx.s;
    tx.result = null;
    if (s.call || !s.connected || s.phase !== 'idle' || s.doors.length === 0) return;
    var id = ev.doorId || ev.selected || s.doors[0].id;
    var door = null;
    s.doors.forEach(function (d) { if (d.id === id) door = d; });
    if (!door) return;
    tx.fx({ type: 'unlockAudio' }); // inside the click: lets audio play on strict browsers
    var c = s.call = newCall(ev.callId, door.name || door.id, null);
    c.accepted = true; // our own call: the door's offer is for us
    c.outgoing = true;
    tx.fx({ type: 'newCall', callId: c.id, doorName: c.doorName });
    tx.show('connecting', 'Calling ' + c.doorName + '…');
    tx.send({ type: 'call_door', call_id: c.id, door: door.id });
    tx.fx({ type: 'getMic', callId: c.id, mode: 'call' });
    tx.fx({ type: 'log', text: 'calling door ' + door.id + ' call_id=' + c.id });
    tx.result = c.id;
  },

  toggleMute: function (tx) {
    tx.s.muted = !tx.s.muted;
    var c = tx.s.call;
    tx.fx({ type: 'mute', muted: tx.s.muted, listenOnly: !!(c && c.listenOnly) });
    tx.record('mute', { muted: tx.s.muted });
  },

  // A notification's Answer or Decline (ev.action), at ev.now.
  callAction: function (tx, ev) {
    tx.s.pendingAction = { type: ev.action, callId: ev.callId, until: ev.now + CALL_ACTION_TTL_MS };
    tx.record('call-action', { action: ev.action, call_id: ev.callId });
    runPendingAction(tx, ev.now);
    if (tx.s.pendingAction && tx.s.connected) {
      tx.fx({ type: 'after', ms: CALL_ACTION_WAIT_MS, event: { type: 'expireAction' } });
    }
  },

  expireAction: function (tx) {
    var a = tx.s.pendingAction;
    if (!a || (tx.s.call && tx.s.call.id === a.callId)) return;
    tx.s.pendingAction = null;
    if (tx.s.phase === 'idle') tx.fx({ type: 'message', text: 'That call has already ended' });
  },

  // ---- media
  // The microphone answered: ev.listenOnly when there is none.
  micReady: function (tx, ev) {
    var c = tx.s.call;
    if (!tx.mine(ev.callId)) return;
    c.micReady = true;
    if (!c.outgoing) {
      c.listenOnly = !!ev.listenOnly;
      tx.fx({ type: 'listenOnly', value: c.listenOnly });
    }
    tx.fx({ type: 'mute', muted: tx.s.muted, listenOnly: c.listenOnly });
    startMedia(tx);
  },

  // Our own call needs the microphone.
  micFailed: function (tx, ev) {
    if (!tx.mine(ev.callId)) return;
    endCall(tx, 'Microphone unavailable', { sendHangup: true, reason: 'error' });
  },

  // The connection took the door's offer (ev.sdp).
  remoteSet: function (tx, ev) {
    var c = tx.s.call;
    if (!tx.mine(ev.callId) || !c.media || c.media.gen !== ev.gen) return;
    c.media.fp = fingerprint(ev.sdp);
  },

  pcState: function (tx, ev) {
    var c = tx.s.call;
    if (!tx.mine(ev.callId) || !c.media || c.media.gen !== ev.gen) return;
    c.media.pcState = ev.state;
    if (ev.state === 'connected' && tx.s.phase !== 'in_call') {
      tx.show('in_call', (c.listenOnly ? 'Listening to ' : 'Talking to ') + c.doorName);
      tx.fx({ type: 'startElapsed' });
    } else if (ev.state === 'failed') {
      // The door station drives recovery (an ICE restart or a new
      // session, sent as a new offer): give it time before giving up.
      tx.record('pc-failed-waiting', { call_id: c.id, grace_ms: FAILED_GRACE_MS });
      tx.fx({ type: 'after', ms: FAILED_GRACE_MS, event: { type: 'failGrace', callId: c.id, gen: ev.gen } });
    }
  },

  failGrace: function (tx, ev) {
    var c = tx.s.call;
    if (!tx.mine(ev.callId) || !c.media || c.media.gen !== ev.gen || c.media.pcState !== 'failed') return;
    endCall(tx, 'Call failed: no audio path', { sendHangup: true, reason: 'failed' });
  },

  // The connection could not be built or could not answer.
  mediaError: function (tx, ev) {
    if (!tx.mine(ev.callId)) return;
    endCall(tx, 'Call failed', { sendHangup: true, reason: 'error' });
  }
};

/** The next state and what to do, for one event. Unknown events change nothing. */
export function step(state, event) {
  var h = event && handlers[event.type];
  if (!h) return { state: state, effects: [], result: undefined };
  var tx = new Tx(state);
  h(tx, event);
  return { state: tx.s, effects: tx.effects, result: tx.result };
}

/** Event names step() knows. */
export var EVENTS = Object.keys(handlers);
