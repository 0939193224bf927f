// A resident calls the door (monitor / talk to the door): an answerer with
// `call_door = true` taps "Talk to the door", the station takes the call on
// its own, audio flows both ways (checked by content), the status LED shows
// the in-call pattern for the whole call, the door opens over the call's
// data channel, a press of the call button is the visitor answering (no
// ring, no hang-up, not even held), and the call is audited at its start
// and its end with the duration. Answerers without the permission see no
// such control, and the hub refuses their `call_door` with `not_permitted`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, sleep, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone, waitForLog, logField, logTime } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, intercomSnapshot, pageEvents } from './lib/answerer.mjs';
import { expectDoorHears, TOL_HZ } from './lib/checks.mjs';
import { RawClient } from './lib/rawclient.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const DOOR_TONE = 600; // [audio.sim] source
const MIC_TONE = 1000; // Chromium's fake microphone
const IN_CALL = 'medium_blink'; // distinct from idle's "on" and ringing's "slow_blink"
const PULSE_MS = 2000;

/** door_call audit lines of the daemon's log, parsed. */
function callAudits(daemon) {
  return daemon.lines
    .filter((l) => /AUDIT="?door_call/.test(l))
    .map((l) => ({
      event: logField(l, 'event'),
      call_id: logField(l, 'call_id'),
      peer: logField(l, 'peer'),
      peer_name: logField(l, 'peer_name'),
      reason: logField(l, 'reason'),
      duration_ms: Number(logField(l, 'duration_ms')),
    }));
}

/** Poll the simulated panel's status until stopped; keeps every sample. */
function pollPanel(control) {
  const samples = [];
  let running = true;
  const done = (async () => {
    while (running) {
      try {
        const s = await control.state();
        samples.push({ at: Date.now(), call: s.call?.state, station: s.door?.station_state, led: s.leds?.status?.pattern, relay: s.relay_energised });
      } catch (err) {
        samples.push({ at: Date.now(), error: String(err.message || err) });
      }
      await sleep(100);
    }
  })();
  return { samples, stop: async () => { running = false; await done; } };
}

test('a resident calls the door: audio both ways, in-call LED, door opens, audited; refused without the permission', { skip, timeout: 240000 }, async () => {
  await withEnv('call_door', async (env) => {
    const setup = standaloneSetup(env, {
      tone: DOOR_TONE,
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A', callDoor: true },
        { id: 'flat-2b', name: 'Flat 2B' },
        { id: 'flat-3c', name: 'Flat 3C' }, // raw client without the permission
        { id: 'flat-4d', name: 'Flat 4D', callDoor: true }, // raw client with it
      ],
    });
    fs.appendFileSync(setup.configFile,
      `\n[door]\npulse_ms = ${PULSE_MS}\n\n[[leds]]\nname = "status"\nin_call = "${IN_CALL}"\n`);
    const { daemon, control, sockets } = await bringUpStandalone(env, setup);
    const [flat1a, flat2b, flat3c, flat4d] = setup.answerers;
    assert.equal((await control.state()).leds.status.pattern, 'on', 'idle LED');

    // ---- The pages: the control only for the permitted resident.
    const browser = await env.browser({ micHz: MIC_TONE, secureOrigins: [setup.origin] });
    const a = await env.page(browser, `${setup.origin}/?raw=1#token=${flat1a.token}`, 'flat-1a');
    const b = await env.page(browser, `${setup.origin}/?raw=1#token=${flat2b.token}`, 'flat-2b');
    await waitForConnection(a);
    await waitForConnection(b);
    const talkA = a.page.getByRole('button', { name: 'Talk to the door' });
    const talkB = b.page.getByRole('button', { name: 'Talk to the door' });
    await waitFor(() => talkA.isVisible(), { timeout: 5000, message: 'Talk to the door shown to flat-1a' });
    assert.equal(await talkB.isVisible(), false, 'no Talk to the door for flat-2b');
    assert.equal(await b.page.locator('#door-call-button').count(), 1, 'the control exists but is hidden');
    assert.deepEqual(await a.page.evaluate(() => window.intercom.callableDoors), [{ id: 'door-1', name: 'Front door' }]);
    assert.deepEqual(await b.page.evaluate(() => window.intercom.callableDoors), []);
    // One door: no choice to make.
    assert.equal(await a.page.locator('#door-call-target').isVisible(), false);

    // ---- A raw client without the permission: welcome lists no door, and
    // the hub refuses its call_door with not_permitted (and logs it).
    const url = `ws://${setup.hubAddr}/ws`;
    const raw3 = await RawClient.connect(sockets.hub, url, 'flat-3c raw');
    const raw4 = await RawClient.connect(sockets.hub, url, 'flat-4d raw');
    let panel = null;
    try {
      const w3 = await raw3.hello('answerer', flat3c.token);
      assert.equal(w3.type, 'welcome');
      assert.equal(w3.doors, undefined, `no doors for flat-3c: ${JSON.stringify(w3)}`);
      const refused = await raw3.expectError({ type: 'call_door', call_id: 'r-raw-1', door: 'door-1' });
      assert.equal(refused.code, 'not_permitted');
      assert.equal(refused.ref, 'call_door');
      assert.equal(refused.call_id, 'r-raw-1');
      await waitForLog(daemon, /call_door from flat-3c refused/, { timeout: 5000 });
      // Without a door named it is refused the same way: the permission comes first.
      assert.equal((await raw3.expectError({ type: 'call_door', call_id: 'r-raw-2' })).code, 'not_permitted');
      // Malformed: no call_id.
      assert.equal((await raw3.expectError({ type: 'call_door', door: 'door-1' })).code, 'bad_message');
      const w4 = await raw4.hello('answerer', flat4d.token);
      assert.deepEqual(w4.doors, [{ id: 'door-1', name: 'Front door' }]);
      assert.equal((await raw4.expectError({ type: 'call_door', call_id: 'r-raw-3', door: 'door-9' })).code, 'unknown_peer');
      await sleep(300);
      assert.equal((await control.state()).call.state, 'idle', 'nothing reached the door');

      // ---- flat-1a calls the door.
      panel = pollPanel(control);
      const clickedAt = Date.now();
      await talkA.click();
      const connecting = await intercomSnapshot(a.page);
      assert.equal(connecting.state, 'connecting');
      const callId = connecting.callId;
      assert.match(callId, /^r-[0-9a-f]{16}$/);
      const talking = await waitForState(a, 'in_call', 20000);
      const inCallAt = Date.now();
      assert.equal(talking.doorNameShown, 'Front door');
      assert.equal(await talkA.isVisible(), false, 'no Talk to the door during the call');
      const door = await control.waitForCallState('in_call', 10000);
      assert.equal(door.call.call_id, callId, 'page and door agree on the call id');
      assert.equal(door.call.answerer, 'flat-1a');
      assert.equal(door.call.resident_call, true);
      // The in-call UI: mute, hang up, open door.
      for (const name of ['Mute microphone', 'Hang up', 'Open the door']) {
        assert.equal(await a.page.getByRole('button', { name }).isVisible(), true, `${name} shown`);
      }
      const sentCallDoor = await pageEvents(a, { kind: 'tx', type: 'call_door' });
      assert.deepEqual(sentCallDoor.map((e) => [e.call_id, e.door]), [[callId, 'door-1']]);
      const calling = await pageEvents(a, { kind: 'rx', type: 'calling' });
      assert.equal(calling.length, 1);
      assert.deepEqual(calling[0].door, { id: 'door-1', name: 'Front door' });
      assert.equal((await pageEvents(a, { kind: 'rx', type: 'offer' })).length, 1, 'the door offered once');

      // Audio both ways, by content.
      const heardAtPage = await expectRemoteTone(a, DOOR_TONE, { timeout: 15000 });
      const heardAtDoor = await expectDoorHears(setup.recordFile, MIC_TONE, { timeout: 15000 });
      const pageHz = heardAtPage.slice(-3);
      const doorHz = heardAtDoor.slice(-2).map((r) => r.hz);
      console.log(`# page hears ${JSON.stringify(pageHz)} Hz (door tone ${DOOR_TONE}); door hears ${JSON.stringify(doorHz)} Hz (mic ${MIC_TONE}); click → in_call ${inCallAt - clickedAt} ms`);
      const st = await control.state();
      if (typeof st.audio.played_dominant_hz === 'number') {
        assert.ok(Math.abs(st.audio.played_dominant_hz - MIC_TONE) <= TOL_HZ, `door played ${st.audio.played_dominant_hz} Hz`);
      }

      // The start is audited.
      await waitForLog(daemon, /AUDIT="?door_call.*event="?start/, { timeout: 5000 });
      const start = callAudits(daemon).find((x) => x.event === 'start');
      assert.deepEqual([start.call_id, start.peer, start.peer_name], [callId, 'flat-1a', 'Flat 1A']);

      // ---- A second resident's call while the door is busy: refused.
      const busy = await raw4.expectError({ type: 'call_door', call_id: 'r-raw-4', door: 'door-1' });
      assert.equal(busy.code, 'busy');

      // ---- The visitor presses the call button: answers, no ring, no hang-up.
      await control.press();
      await waitForLog(daemon, /the visitor answers/, { timeout: 5000 });
      // Held past the long-press time: still no hang-up.
      await control.post('/press?ms=2500');
      await waitForLog(daemon, /long press.*ignored: a resident called the door/, { timeout: 5000 });
      assert.equal((await control.state()).call.state, 'in_call', 'the call goes on after the presses');
      assert.equal((await intercomSnapshot(a.page)).state, 'in_call');
      assert.equal((await pageEvents(b, { kind: 'rx', type: 'ring' })).length, 0, 'nobody was rung');
      assert.equal((await intercomSnapshot(b.page)).state, 'idle');

      // ---- The door opens over the call's data channel.
      const openButton = a.page.getByRole('button', { name: 'Open the door' });
      await waitFor(() => openButton.isEnabled(), { timeout: 10000, message: 'Open door enabled' });
      const openAt = Date.now();
      await openButton.click();
      const granted = await waitFor(async () => {
        const r = await a.page.evaluate(() => window.intercom.lastDoorResult);
        return r && r.granted ? r : null;
      }, { timeout: 5000, interval: 50, message: 'the door to grant the open' });
      assert.equal(granted.pulse_ms, PULSE_MS);
      await waitFor(async () => (await control.state()).relay_energised, { timeout: 2000, interval: 50, message: 'the relay pulsed' });
      const openAudit = await waitForLog(daemon, new RegExp(`AUDIT="?door_open.*nonce="?${granted.nonce}`), { timeout: 5000 });
      assert.equal(logField(openAudit.line, 'source'), 'data_channel');
      assert.equal(logField(openAudit.line, 'call_id'), callId);
      assert.equal(logField(openAudit.line, 'peer'), 'flat-1a');
      assert.equal(logField(openAudit.line, 'granted'), 'true');
      await waitFor(async () => (await control.state()).relay_energised === false,
        { timeout: PULSE_MS + 3000, interval: 100, message: 'the relay released' });
      const releasedAt = Date.now();
      // The door mutes, the flat's page still hears it; talk a moment more.
      await sleep(1500);
      await expectRemoteTone(a, DOOR_TONE, { timeout: 5000 });

      // ---- The resident hangs up.
      const hangupAt = Date.now();
      await a.page.getByRole('button', { name: 'Hang up' }).click();
      await waitForState(a, 'idle', 5000);
      await control.waitForNoCall(10000);
      const endedAt = Date.now();
      await panel.stop();
      const endLine = await waitForLog(daemon, /AUDIT="?door_call.*event="?end/, { timeout: 5000 });
      const startLine = await waitForLog(daemon, /AUDIT="?door_call.*event="?start/);
      const end = callAudits(daemon).find((x) => x.event === 'end');
      assert.deepEqual([end.call_id, end.peer, end.peer_name, end.reason], [callId, 'flat-1a', 'Flat 1A', 'normal']);
      // The door's duration runs from taking the call to the hang-up: inside
      // what the test saw, and equal to the time between the two audit lines.
      const between = logTime(endLine.line) - logTime(startLine.line);
      console.log(`# audited duration ${end.duration_ms} ms; between the audit lines ${between.toFixed(1)} ms; `
        + `test: click → hang-up click ${hangupAt - clickedAt} ms, click → idle ${endedAt - clickedAt} ms`);
      assert.ok(end.duration_ms >= hangupAt - inCallAt && end.duration_ms <= endedAt - clickedAt,
        `duration_ms ${end.duration_ms} within [${hangupAt - inCallAt}, ${endedAt - clickedAt}] ms`);
      assert.ok(Math.abs(end.duration_ms - between) <= 20, `duration_ms ${end.duration_ms} vs ${between} ms between the audit lines`);
      await waitFor(() => talkA.isVisible(), { timeout: 5000, message: 'Talk to the door shown again' });

      // ---- The LED showed the in-call pattern for the whole call. The
      // door-open pattern (slow_blink, like ringing) has priority while the
      // lock is released, so it may show only around the pulse. (The
      // status's call state is published every 500 ms; the LED is live.)
      // Up to the hang-up click: the end of the call is a transition (the
      // LED goes back to idle a moment before the status says so).
      const during = panel.samples.filter((s) => s.call && s.call !== 'idle' && s.call !== 'ended' && s.at < hangupAt);
      assert.ok(during.length >= 20, `${during.length} status samples during the call`);
      const aroundPulse = (s) => s.at >= openAt && s.at <= releasedAt + 600;
      const wrong = during.filter((s) => !(s.led === IN_CALL || (s.led === 'slow_blink' && aroundPulse(s))));
      assert.deepEqual(wrong, [], 'every sample of the call shows the in-call pattern (or door open around the pulse)');
      const inCallSamples = during.filter((s) => s.led === IN_CALL).length;
      const connectingSamples = during.filter((s) => s.call === 'connecting');
      console.log(`# LED: ${inCallSamples}/${during.length} samples during the call in-call (${connectingSamples.length} while the status said connecting), `
        + `${during.length - inCallSamples} door open; the first sample after the click: ${JSON.stringify(during[0])}`);
      // From the click to the first in-call LED, nothing but idle's "on".
      const beforeCall = panel.samples.filter((s) => s.at < during[0].at);
      assert.ok(beforeCall.every((s) => s.led === 'on'), `before the call: ${JSON.stringify(beforeCall)}`);

      // No log line carries a token.
      for (const t of setup.answerers) assert.ok(!daemon.lines.some((l) => l.includes(t.token)), `token of ${t.id} not logged`);
      assert.equal(daemon.exitInfo, null, 'the daemon is still running');
    } finally {
      if (panel) await panel.stop();
      raw3.close();
      raw4.close();
    }
  });
});
