// A path that dies one way only, which the WebRTC stack cannot see by
// itself: the resident's page gathers relay candidates only, so the door
// selects its own host candidate to the resident's TURN relay. Then the
// door's NAT drops all UDP. Chromium moves its sending to the pair from the
// door's TURN-over-TCP relay to that same remote relay, so the door hears
// the resident again, while everything the door sends still goes into the
// dead path. The resident's receiver reports show it (the highest sequence
// they report for the door's stream stops moving): the door restarts ICE,
// and audio is checked by content both ways afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason, logTime, waitForLog } from './lib/daemon.mjs';
import { withRig, natRigSkipReason } from './lib/natrig.mjs';
import { bringUpNatCall, callWithAudio, selectedPair, turnServers, DOOR_TONE, MIC_TONE } from './lib/natcall.mjs';
import { expectRemoteTone, intercomSnapshot } from './lib/answerer.mjs';
import { expectDoorHears } from './lib/checks.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : (daemonSkipReason() || natRigSkipReason());
// Long enough that the browser moves its sending before the stack would
// declare the path dead on its own.
const RECEIVING_TIMEOUT_MS = 15000;

/** In the page, before its own scripts: every peer connection gathers relay candidates only. */
function relayOnlyPage() {
  const Native = window.RTCPeerConnection;
  function RelayOnly(config, ...rest) {
    return new Native({ ...(config || {}), iceTransportPolicy: 'relay' }, ...rest);
  }
  RelayOnly.prototype = Native.prototype;
  Object.setPrototypeOf(RelayOnly, Native);
  window.RTCPeerConnection = RelayOnly;
}

test('a path lost one way (the door hears, the resident does not) is noticed and ICE restarted', { skip, timeout: 150000 }, async () => {
  await withRig({}, async (rig) => {
    await rig.startTurn();
    const s = await bringUpNatCall(rig, {
      servers: turnServers(rig, ['stun', 'tcp']),
      receivingTimeoutMs: RECEIVING_TIMEOUT_MS,
      pageInit: relayOnlyPage,
    });
    const { callId, established } = await callWithAudio(s);
    const before = selectedPair(established);
    assert.equal(before.remote, 'relay', `the resident offers relay candidates only: ${established}`);
    assert.notEqual(before.local, 'relay', `the door starts on its own address: ${established}`);

    const from = s.door.lines.length;
    const cutAt = Date.now();
    await rig.ipt('natd', '-I', 'FORWARD', '1', '-p', 'udp', '-j', 'DROP');

    const recovering = await waitForLog(s.door, /call media lost; trying to bring it back/, { from, timeout: 30000 });
    const restored = await waitForLog(s.door, /media path restored/, { from, timeout: 30000 });
    await expectRemoteTone(s.page, DOOR_TONE, { timeout: 10000 });
    await expectDoorHears(s.recordFile, MIC_TONE, { timeout: 10000 });
    const back = Date.now();

    const lines = s.door.lines.slice(from);
    const oneWay = lines.find((l) => /path lost one way/.test(l));
    const story = lines.filter((l) => !/DEBUG|TRACE/.test(l)).slice(0, 40);
    process.stderr.write(`one-way: ${oneWay ? 'noticed by the receiver reports' : 'noticed by the stack'}; recovery started ${Math.round(logTime(recovering.line) - cutAt)} ms after the cut, audio back both ways ${back - cutAt} ms after it; door log (relative to the cut):\n${story.map((l) => {
      const t = logTime(l);
      return `  +${t ? Math.round(t - cutAt) : '?'} ms ${l.replace(/^\S+\s+/, '')}`;
    }).join('\n')}\n`);

    // Either way the door restarted ICE (never a new session) and the
    // same call goes on with audio both ways.
    assert.match(recovering.line, /remedy="?ICE restart/);
    if (oneWay) assert.match(recovering.line, /the resident no longer receives the station's audio/);
    assert.equal(selectedPair(restored.line).local, 'relay', `the restarted call runs through the door's relay: ${restored.line}`);
    const state = await s.control.state();
    assert.equal(state.call.state, 'in_call');
    assert.equal(state.call.call_id, callId, 'the same call');
    assert.ok(!lines.some((l) => /call ended/.test(l)), 'the call never ended');

    await s.control.hangup();
    await s.control.waitForNoCall(10000);
    await waitFor(async () => (await intercomSnapshot(s.page.page)).state === 'idle', { timeout: 10000, message: 'the page back to idle' });
  });
});
