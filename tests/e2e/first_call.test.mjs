// The first real call: a visitor presses the button, the resident's page
// rings, the resident accepts, audio flows both ways (checked by content),
// and either side can hang up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, intercomSnapshot, pageEvents } from './lib/answerer.mjs';
import { expectDoorHears, expectDoorStopsHearing, TOL_HZ } from './lib/checks.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const DOOR_TONE = 600; // [audio.sim] source
const MIC_TONE = 1000; // Chromium's fake microphone WAV

test('first call: ring, accept, two-way audio, hang-up from either side', { skip, timeout: 180000 }, async () => {
  await withEnv('first_call', async (env) => {
    const setup = standaloneSetup(env, { tone: DOOR_TONE });
    const { daemon, control } = await bringUpStandalone(env, setup);
    const idle = await control.state();
    assert.equal(idle?.call?.state, 'idle', `door starts idle: ${JSON.stringify(idle)}`);

    const browser = await env.browser({ micHz: MIC_TONE, secureOrigins: [setup.origin] });
    const flat = await env.page(browser, `${setup.origin}/?raw=1#token=${setup.answerers[0].token}`, 'flat-1a');
    await waitForConnection(flat);

    // ---- Call 1: hang-up from the browser.
    await control.press();
    const ringing = await waitForState(flat, 'ringing', 10000);
    assert.equal(ringing.doorNameShown, 'Front door', 'the page shows the door name while ringing');
    assert.equal(ringing.stateLabel, 'Ringing');
    const doorRinging = await control.waitForCallState('ringing', 5000);
    assert.equal(doorRinging.call.call_id, ringing.callId, 'page and door agree on the call id');
    const callId1 = ringing.callId;

    await flat.page.getByRole('button', { name: 'Accept the call' }).click();
    const talking = await waitForState(flat, 'in_call', 20000);
    assert.equal(talking.stateLabel, 'In call');
    await control.waitForCallState('in_call', 10000);

    await expectRemoteTone(flat, DOOR_TONE, { timeout: 15000 });
    await expectDoorHears(setup.recordFile, MIC_TONE, { timeout: 15000 });
    const st = await control.state();
    assert.ok(st.audio && st.audio.captured_frames > 0, `door captured audio: ${JSON.stringify(st.audio)}`);
    assert.ok(st.audio.played_frames > 0, `door played audio: ${JSON.stringify(st.audio)}`);
    if (typeof st.audio.played_dominant_hz === 'number') {
      assert.ok(Math.abs(st.audio.played_dominant_hz - MIC_TONE) <= TOL_HZ,
        `door's own played_dominant_hz ${st.audio.played_dominant_hz} should be ~${MIC_TONE}`);
    }
    const snap = await intercomSnapshot(flat.page);
    assert.ok(snap.firstAudioAt > 0, 'the page saw the first audio packet (remote track unmute)');
    const offers = await pageEvents(flat, { kind: 'rx', type: 'offer' });
    assert.equal(offers.length, 1, 'one offer for the call');
    // Checked at the end so that a missing data channel does not hide the rest.
    const dataChannelOpen = await waitFor(async () => (await intercomSnapshot(flat.page)).dataChannel?.readyState === 'open',
      { timeout: 5000, message: 'the data channel' }).then(() => true, () => false);

    // Mute stops the flat's audio at the door's speaker; unmute restores it.
    await flat.page.getByRole('button', { name: 'Mute microphone' }).click();
    await expectDoorStopsHearing(setup.recordFile, MIC_TONE, { timeout: 5000 });
    await flat.page.getByRole('button', { name: 'Unmute microphone' }).click();
    await expectDoorHears(setup.recordFile, MIC_TONE, { timeout: 5000 });

    await flat.page.getByRole('button', { name: 'Hang up' }).click();
    const ended1 = await waitForState(flat, 'idle', 5000);
    assert.equal(ended1.message, 'Call ended');
    await control.waitForNoCall(10000);
    const sent = await pageEvents(flat, { kind: 'tx', type: 'hangup' });
    assert.deepEqual(sent.map((e) => [e.call_id, e.reason]), [[callId1, 'normal']]);

    // ---- Call 2: hang-up from the door.
    await control.press();
    const ringing2 = await waitForState(flat, 'ringing', 10000);
    assert.notEqual(ringing2.callId, callId1, 'a new call gets a new call id');
    await flat.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(flat, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    await expectRemoteTone(flat, DOOR_TONE, { timeout: 15000 });
    await expectDoorHears(setup.recordFile, MIC_TONE, { timeout: 15000 });

    await control.hangup();
    const ended2 = await waitForState(flat, 'idle', 5000);
    assert.equal(ended2.message, 'Call ended');
    await control.waitForNoCall(10000);
    const received = await pageEvents(flat, { kind: 'rx', type: 'hangup' });
    assert.equal(received.length, 1, 'the page received exactly one hangup');
    assert.equal(received[0].call_id, ringing2.callId);
    assert.equal(daemon.exitInfo, null, 'the daemon is still running');

    // ---- The log tells the story of the first call in order. All the
    // remaining checks are collected so that one report shows every problem.
    const problems = [];
    const lines = daemon.lines;
    const phrases = ['Socket connected', 'Processing \\d+ pending ICE candidates', 'Added remote ICE candidate',
      'AUDIO CONNECTION ESTABLISHED', 'Audio setup for call completed'];
    const firstIndex = phrases.map((p) => lines.findIndex((l) => new RegExp(p).test(l)));
    phrases.forEach((p, i) => {
      if (firstIndex[i] < 0 && !p.startsWith('Processing')) problems.push(`log line missing: "${p}"`);
    });
    const present = phrases.map((p, i) => ({ p, i: firstIndex[i] })).filter((x) => x.i >= 0);
    for (let k = 1; k < present.length; k++) {
      if (!(present[k - 1].i < present[k].i)) {
        problems.push(`"${present[k - 1].p}" (log line ${present[k - 1].i}) must come before "${present[k].p}" (log line ${present[k].i})`);
      }
    }
    const scoped = lines.filter((l) => phrases.slice(1).some((p) => new RegExp(p).test(l)));
    for (const l of scoped.filter((x) => !/call_id=/.test(x))) problems.push(`milestone line without call_id=: ${l}`);
    for (const cid of [callId1, ringing2.callId]) {
      if (!lines.some((l) => l.includes('AUDIO CONNECTION ESTABLISHED') && l.includes(cid))) {
        problems.push(`AUDIO CONNECTION ESTABLISHED not logged for ${cid}`);
      }
    }
    const token = setup.answerers[0].token;
    if (flat.console.some((l) => l.includes(token))) problems.push('the page printed its token to the console');
    if (lines.some((l) => l.includes(token))) problems.push('the daemon logged an answerer token');
    const candErrors = await pageEvents(flat, { kind: 'remote-candidate-error' });
    if (candErrors.length) problems.push(`the page failed to apply remote candidates: ${JSON.stringify(candErrors)}`);
    if (!dataChannelOpen) problems.push('the door\'s offer carries no data channel that opens at the page (ondatachannel never fired or never opened)');
    assert.deepEqual(problems, [], `first call problems:\n  ${problems.join('\n  ')}`);
  });
});
