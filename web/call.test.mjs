// Unit tests of call.js, the answering page's call state machine:
//   node --test web/        (or: make test-web)
// Each test drives step() with events and checks the state it returns and
// the effects the page would carry out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { step, initialState, fingerprint, canCallDoor, FAILED_GRACE_MS, CALL_ACTION_TTL_MS } from './call.js';

const OFFER_A = 'v=0\r\na=ice-ufrag:aaaa\r\na=fingerprint:sha-256 AB:CD:EF\r\n';
const OFFER_A_RESTART = 'v=0\r\na=ice-ufrag:bbbb\r\na=fingerprint:sha-256 AB:CD:EF\r\n';
const OFFER_B = 'v=0\r\na=ice-ufrag:cccc\r\na=fingerprint:sha-256 12:34:56\r\n';

/** Runs events in turn; the last step's state, effects and result. */
function run(state, ...events) {
  let r = { state, effects: [], result: undefined };
  for (const ev of events) r = step(r.state, ev);
  return r;
}

const types = (effects) => effects.map((e) => e.type);
const sent = (effects) => effects.filter((e) => e.type === 'send').map((e) => e.msg);
const records = (effects, kind) => effects.filter((e) => e.type === 'record' && e.kind === kind).map((e) => e.data);
const shown = (effects) => effects.filter((e) => e.type === 'show').map((e) => [e.state, e.message]);

const online = (doors = []) => ({ type: 'online', doors });
const ring = (id = 'c1', name = 'Front door', now = 1000) => ({ type: 'ring', msg: { type: 'ring', call_id: id, door: { id: 'door-1', name } }, now });

function connected(opts) {
  return step(initialState(opts), online()).state;
}
function ringing(opts) {
  return step(connected(opts), ring()).state;
}
function accepted(opts) {
  return step(ringing(opts), { type: 'accept' }).state;
}
/** Accepted, microphone granted, offer taken: media started (gen 1). */
function inMedia() {
  return run(accepted(), { type: 'micReady', callId: 'c1', listenOnly: false },
    { type: 'offer', msg: { type: 'offer', call_id: 'c1', sdp: OFFER_A } }).state;
}

test('step leaves the state it was given untouched and ignores unknown events', () => {
  const s = ringing();
  const before = JSON.stringify(s);
  step(s, { type: 'accept' });
  step(s, { type: 'taken', msg: { call_id: 'c1', by: 'Flat 2' } });
  assert.equal(JSON.stringify(s), before);
  const r = step(s, { type: 'no-such-event' });
  assert.equal(r.state, s);
  assert.deepEqual(r.effects, []);
});

test('ringing: a ring starts a call, shows it and rings', () => {
  const r = step(connected(), ring('c1', 'Front door'));
  assert.equal(r.state.phase, 'ringing');
  assert.equal(r.state.call.id, 'c1');
  assert.equal(r.state.call.doorName, 'Front door');
  assert.equal(r.state.call.accepted, false);
  assert.deepEqual(types(r.effects), ['newCall', 'show', 'log', 'ring']);
  assert.deepEqual(r.effects[0], { type: 'newCall', callId: 'c1', doorName: 'Front door' });
  assert.deepEqual(r.effects[1], { type: 'show', state: 'ringing', message: 'Someone is at the door', callId: 'c1', doorName: 'Front door' });
  assert.equal(canCallDoor(r.state), false);
});

test('ringing: the door id stands in for a missing name, "Door" for a missing door', () => {
  const s = connected();
  const byId = step(s, { type: 'ring', msg: { call_id: 'c1', door: { id: 'gate' } }, now: 0 });
  assert.equal(byId.state.call.doorName, 'gate');
  const none = step(s, { type: 'ring', msg: { call_id: 'c1' }, now: 0 });
  assert.equal(none.state.call.doorName, 'Door');
  assert.equal(step(s, { type: 'ring', msg: {}, now: 0 }).state.call, null, 'no call id: no call');
});

test('ringing: the same call announced again changes nothing; another call while busy is ignored', () => {
  const s = accepted();
  const again = step(s, ring('c1'));
  assert.deepEqual(again.effects, []);
  assert.equal(again.state.phase, 'connecting');
  const other = step(s, ring('c2', 'Back door'));
  assert.equal(other.state.call.id, 'c1');
  assert.deepEqual(other.effects, [{ type: 'record', kind: 'ignored-ring', data: { call_id: 'c2', busy_with: 'c1' } }]);
});

test('ringing: autoaccept answers at once without a ring tone', () => {
  const r = step(connected({ autoAccept: true }), ring());
  assert.equal(r.state.phase, 'connecting');
  assert.equal(r.state.call.accepted, true);
  assert.deepEqual(sent(r.effects), [{ type: 'accept', call_id: 'c1' }]);
  assert.equal(types(r.effects).includes('ring'), false);
});

test('taken: answered elsewhere ends the ringing call without a hangup', () => {
  const r = step(ringing(), { type: 'taken', msg: { type: 'taken', call_id: 'c1', by: 'Flat 2B' } });
  assert.equal(r.state.phase, 'idle');
  assert.equal(r.state.call, null);
  assert.deepEqual(shown(r.effects), [['idle', 'Answered by Flat 2B']]);
  assert.deepEqual(sent(r.effects), [{ type: 'get_history', limit: 50 }], 'no hangup, only the history');
  assert.deepEqual(types(r.effects), ['stopRing', 'stopElapsed', 'endMedia', 'record', 'listenOnly', 'mute', 'show', 'send']);
  assert.deepEqual(records(r.effects, 'call-ended'), [{ call_id: 'c1', message: 'Answered by Flat 2B' }]);
});

test('taken: without a name it was "someone else"; another call\'s taken is not ours', () => {
  const r = step(ringing(), { type: 'taken', msg: { call_id: 'c1' } });
  assert.deepEqual(shown(r.effects), [['idle', 'Answered by someone else']]);
  const other = step(ringing(), { type: 'taken', msg: { call_id: 'zz', by: 'X' } });
  assert.equal(other.state.phase, 'ringing');
  assert.deepEqual(other.effects, []);
});

test('accepted: accept sends accept, shows connecting and asks for the microphone', () => {
  const r = step(ringing(), { type: 'accept' });
  assert.equal(r.result, true);
  assert.equal(r.state.phase, 'connecting');
  assert.equal(r.state.call.accepted, true);
  assert.deepEqual(r.effects, [
    { type: 'stopRing' },
    { type: 'unlockAudio' },
    { type: 'show', state: 'connecting', message: 'Connecting…', callId: 'c1', doorName: 'Front door' },
    { type: 'send', msg: { type: 'accept', call_id: 'c1' } },
    { type: 'getMic', callId: 'c1', mode: 'answer' },
  ]);
  const twice = step(r.state, { type: 'accept' });
  assert.equal(twice.result, false, 'only a ringing call is accepted');
  assert.deepEqual(twice.effects, []);
  assert.equal(step(connected(), { type: 'accept' }).result, false, 'nothing rings');
});

test('accepted: the offer waits for the microphone, then media starts on it', () => {
  const early = step(accepted(), { type: 'offer', msg: { type: 'offer', call_id: 'c1', sdp: OFFER_A } });
  assert.deepEqual(early.effects, [], 'no media before the microphone answered');
  assert.equal(early.state.call.offer, OFFER_A);
  const r = step(early.state, { type: 'micReady', callId: 'c1', listenOnly: true });
  assert.equal(r.state.call.listenOnly, true);
  assert.deepEqual(r.state.call.media, { gen: 1, fp: null, pcState: null });
  assert.deepEqual(r.effects, [
    { type: 'listenOnly', value: true },
    { type: 'mute', muted: false, listenOnly: true },
    { type: 'startMedia', callId: 'c1', gen: 1, sdp: OFFER_A },
  ]);
  // Connected: in call, listening only.
  const up = step(r.state, { type: 'pcState', callId: 'c1', gen: 1, state: 'connected' });
  assert.equal(up.state.phase, 'in_call');
  assert.deepEqual(shown(up.effects), [['in_call', 'Listening to Front door']]);
  assert.deepEqual(types(up.effects), ['show', 'startElapsed']);
});

test('accepted: an offer for a call not accepted here is ignored and recorded', () => {
  const r = step(ringing(), { type: 'offer', msg: { type: 'offer', call_id: 'c1', sdp: OFFER_A } });
  assert.deepEqual(r.effects, [{ type: 'record', kind: 'ignored-offer', data: { call_id: 'c1' } }]);
  assert.equal(r.state.call.offer, null);
});

test('re-offer: same DTLS fingerprint is an ICE restart on the same connection', () => {
  const s = step(inMedia(), { type: 'remoteSet', callId: 'c1', gen: 1, sdp: OFFER_A }).state;
  assert.equal(s.call.media.fp, 'sha-256 ab:cd:ef');
  const r = step(s, { type: 'offer', msg: { type: 'offer', call_id: 'c1', sdp: OFFER_A_RESTART } });
  assert.deepEqual(r.effects, [
    { type: 'record', kind: 'ice-restart', data: { call_id: 'c1' } },
    { type: 'restartIce', callId: 'c1', sdp: OFFER_A_RESTART },
  ]);
  assert.equal(r.state.call.media.gen, 1);
});

test('re-offer: a new fingerprint is a new session on a new connection', () => {
  const s = step(inMedia(), { type: 'remoteSet', callId: 'c1', gen: 1, sdp: OFFER_A }).state;
  const r = step(s, { type: 'offer', msg: { type: 'offer', call_id: 'c1', sdp: OFFER_B } });
  assert.deepEqual(r.effects, [
    { type: 'record', kind: 'media-renewed', data: { call_id: 'c1' } },
    { type: 'renewMedia', callId: 'c1', gen: 2, sdp: OFFER_B },
  ]);
  assert.deepEqual(r.state.call.media, { gen: 2, fp: null, pcState: null });
  // The old connection's late news no longer counts.
  const stale = step(r.state, { type: 'pcState', callId: 'c1', gen: 1, state: 'connected' });
  assert.equal(stale.state.phase, 'connecting');
  assert.deepEqual(stale.effects, []);
});

test('re-offer: a failed connection waits for recovery, then gives up with a hangup', () => {
  const failed = step(inMedia(), { type: 'pcState', callId: 'c1', gen: 1, state: 'failed' });
  assert.deepEqual(failed.effects, [
    { type: 'record', kind: 'pc-failed-waiting', data: { call_id: 'c1', grace_ms: FAILED_GRACE_MS } },
    { type: 'after', ms: 30000, event: { type: 'failGrace', callId: 'c1', gen: 1 } },
  ]);
  const grace = { type: 'failGrace', callId: 'c1', gen: 1 };
  const end = step(failed.state, grace);
  assert.equal(end.state.phase, 'idle');
  assert.deepEqual(sent(end.effects), [
    { type: 'hangup', call_id: 'c1', reason: 'failed' },
    { type: 'get_history', limit: 50 },
  ]);
  assert.deepEqual(shown(end.effects), [['idle', 'Call failed: no audio path']]);
  // Recovered in time (an ICE restart got it connected again): the call goes on.
  const back = run(failed.state, { type: 'pcState', callId: 'c1', gen: 1, state: 'connected' }, grace);
  assert.equal(back.state.phase, 'in_call');
  assert.deepEqual(back.effects, []);
});

test('hang-up (local): ends an accepted call and tells the door', () => {
  const s = step(inMedia(), { type: 'pcState', callId: 'c1', gen: 1, state: 'connected' }).state;
  const r = step(s, { type: 'hangup', reason: 'normal' });
  assert.equal(r.result, true);
  assert.equal(r.state.phase, 'idle');
  assert.equal(r.state.call, null);
  assert.deepEqual(r.effects, [
    { type: 'stopRing' },
    { type: 'stopElapsed' },
    { type: 'send', msg: { type: 'hangup', call_id: 'c1', reason: 'normal' } },
    { type: 'endMedia', callId: 'c1' },
    { type: 'record', kind: 'call-ended', data: { call_id: 'c1', message: 'Call ended' } },
    { type: 'listenOnly', value: false },
    { type: 'mute', muted: false, listenOnly: false },
    { type: 'show', state: 'idle', message: 'Call ended', callId: null, doorName: null },
    { type: 'send', msg: { type: 'get_history', limit: 50 } },
  ]);
  const ringingOnly = step(ringing(), { type: 'hangup', reason: 'normal' });
  assert.equal(ringingOnly.result, false, 'a call not accepted is declined, not hung up');
  assert.deepEqual(ringingOnly.effects, []);
});

test('hang-up (remote): the door hangs up, or is busy; no hangup goes back', () => {
  const r = step(inMedia(), { type: 'remoteHangup', msg: { type: 'hangup', call_id: 'c1', reason: 'normal' } });
  assert.equal(r.state.phase, 'idle');
  assert.deepEqual(shown(r.effects), [['idle', 'Call ended']]);
  assert.deepEqual(sent(r.effects).map((m) => m.type), ['get_history']);
  const busy = step(inMedia(), { type: 'remoteHangup', msg: { type: 'hangup', call_id: 'c1', reason: 'busy' } });
  assert.deepEqual(shown(busy.effects), [['idle', 'The door is busy']]);
  const other = step(inMedia(), { type: 'remoteHangup', msg: { type: 'hangup', call_id: 'c9' } });
  assert.deepEqual(other.effects, []);
});

test('declined and cancelled: decline tells the hub; a cancelled ring is a missed call', () => {
  const d = step(ringing(), { type: 'decline' });
  assert.equal(d.result, true);
  assert.deepEqual(sent(d.effects), [{ type: 'decline', call_id: 'c1' }, { type: 'get_history', limit: 50 }]);
  assert.deepEqual(shown(d.effects), [['idle', 'Declined']]);
  const c = step(ringing(), { type: 'cancel', msg: { type: 'cancel', call_id: 'c1' } });
  assert.deepEqual(shown(c.effects), [['idle', 'Waiting for a visitor']], 'the history tells of it');
  const noHistory = run(ringing(), { type: 'noHistory' }, { type: 'cancel', msg: { call_id: 'c1' } });
  assert.deepEqual(shown(noHistory.effects), [['idle', 'Missed call']]);
  assert.deepEqual(sent(noHistory.effects), [], 'no history to ask for');
  const inCall = step(inMedia(), { type: 'cancel', msg: { call_id: 'c1' } });
  assert.deepEqual(shown(inCall.effects), [['idle', 'Call ended']]);
});

test('offline: losing signaling keeps the call; online again asks for the history', () => {
  const s = step(inMedia(), { type: 'pcState', callId: 'c1', gen: 1, state: 'connected' }).state;
  const off = step(s, { type: 'offline' });
  assert.equal(off.state.connected, false);
  assert.equal(off.state.phase, 'in_call');
  assert.equal(off.state.call.id, 'c1');
  assert.deepEqual(off.effects, []);
  const up = step(off.state, online([{ id: 'door-1', name: 'Front door' }]));
  assert.equal(up.state.connected, true);
  assert.deepEqual(up.state.doors, [{ id: 'door-1', name: 'Front door' }]);
  assert.deepEqual(up.effects, [{ type: 'send', msg: { type: 'get_history', limit: 50 } }]);
  // The hub announces the same call again after the resume: nothing changes.
  assert.deepEqual(step(up.state, ring('c1')).effects, []);
  // Hung up while offline: the call ends here all the same (the shell
  // drops the send), and no history is asked for until online.
  const ended = step(off.state, { type: 'hangup', reason: 'normal' });
  assert.deepEqual(sent(ended.effects), [{ type: 'hangup', call_id: 'c1', reason: 'normal' }]);
  assert.equal(canCallDoor(off.state), false);
});

test('calling the door: only online, idle, permitted; a refusal ends it without a hangup', () => {
  const doors = [{ id: 'door-1', name: 'Front door' }, { id: 'gate' }];
  const s = step(initialState(), online(doors)).state;
  assert.equal(canCallDoor(s), true);
  assert.equal(step(initialState(), { type: 'callDoor', callId: 'r-1' }).result, null, 'offline');
  const r = step(s, { type: 'callDoor', selected: 'gate', callId: 'r-1' });
  assert.equal(r.result, 'r-1');
  assert.equal(r.state.phase, 'connecting');
  assert.equal(r.state.call.outgoing, true);
  assert.deepEqual(shown(r.effects), [['connecting', 'Calling gate…']]);
  assert.deepEqual(sent(r.effects), [{ type: 'call_door', call_id: 'r-1', door: 'gate' }]);
  assert.ok(r.effects.some((e) => e.type === 'getMic' && e.mode === 'call'));
  const named = step(r.state, { type: 'calling', msg: { call_id: 'r-1', door: { id: 'gate', name: 'Garden gate' } } });
  assert.deepEqual(named.effects, [{ type: 'doorName', name: 'Garden gate' }, { type: 'message', text: 'Connecting to Garden gate…' }]);
  const refused = step(r.state, { type: 'callDoorRefused', msg: { code: 'door_offline', ref: 'call_door', call_id: 'r-1' } });
  assert.equal(refused.state.phase, 'idle');
  assert.deepEqual(shown(refused.effects), [['idle', 'The door is offline']]);
  assert.equal(sent(refused.effects).some((m) => m.type === 'hangup'), false);
  const noMic = step(r.state, { type: 'micFailed', callId: 'r-1' });
  assert.deepEqual(sent(noMic.effects)[0], { type: 'hangup', call_id: 'r-1', reason: 'error' });
  assert.deepEqual(shown(noMic.effects), [['idle', 'Microphone unavailable']]);
  assert.equal(step(s, { type: 'callDoor', doorId: 'nope', callId: 'r-2' }).result, null, 'unknown door');
});

test('notification actions: Answer waits for its ring, expires after a minute', () => {
  const s = connected();
  const asked = step(s, { type: 'callAction', action: 'answer', callId: 'c1', now: 1000 });
  assert.deepEqual(asked.state.pendingAction, { type: 'answer', callId: 'c1', until: 1000 + CALL_ACTION_TTL_MS });
  assert.deepEqual(asked.effects.at(-1), { type: 'after', ms: 5000, event: { type: 'expireAction' } });
  const rung = step(asked.state, ring('c1', 'Front door', 2000));
  assert.equal(rung.state.phase, 'connecting', 'answered at once');
  assert.deepEqual(records(rung.effects, 'call-action-run'), [{ action: 'answer', call_id: 'c1' }]);
  assert.equal(types(rung.effects).includes('ring'), false);
  const late = step(asked.state, ring('c1', 'Front door', 1000 + CALL_ACTION_TTL_MS + 1));
  assert.equal(late.state.phase, 'ringing', 'too late: it just rings');
  assert.equal(late.state.pendingAction, null);
  const gone = step(asked.state, { type: 'expireAction' });
  assert.equal(gone.state.pendingAction, null);
  assert.deepEqual(gone.effects, [{ type: 'message', text: 'That call has already ended' }]);
  const decline = run(ringing(), { type: 'callAction', action: 'decline', callId: 'c1', now: 5 });
  assert.equal(decline.state.phase, 'idle');
  assert.deepEqual(sent(decline.effects)[0], { type: 'decline', call_id: 'c1' });
});

test('mute toggles and resets when the call ends', () => {
  const m = step(inMedia(), { type: 'toggleMute' });
  assert.equal(m.state.muted, true);
  assert.deepEqual(m.effects, [
    { type: 'mute', muted: true, listenOnly: false },
    { type: 'record', kind: 'mute', data: { muted: true } },
  ]);
  assert.equal(step(m.state, { type: 'hangup' }).state.muted, false);
});

test('fingerprint reads the DTLS fingerprint, lower case', () => {
  assert.equal(fingerprint(OFFER_B), 'sha-256 12:34:56');
  assert.equal(fingerprint('v=0\r\n'), null);
  assert.equal(fingerprint(undefined), null);
});
