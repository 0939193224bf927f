// Opening the door from the answering page: the request travels on the
// call's WebRTC data channel, the relay pulses for the configured time, the
// page shows the result, and every attempt is an audit record. A second
// click inside the rate limit, a replayed nonce, and opens sent over
// signaling (during and after the call) open nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, sleep, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone, waitForLog, logField } from './lib/daemon.mjs';
import { waitForConnection, waitForState, pageEvents } from './lib/answerer.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const PULSE_MS = 3000;
const INTERVAL_MS = 5000;

function doorStatus(p) {
  return p.page.evaluate(() => document.getElementById('door-status').textContent);
}

function lastDoorResult(p) {
  return p.page.evaluate(() => window.intercom.lastDoorResult);
}

/** Audit lines of the daemon's log, parsed. */
function audits(daemon) {
  return daemon.lines
    .filter((l) => /AUDIT="?door_open/.test(l))
    .map((l) => ({
      source: logField(l, 'source'),
      call_id: logField(l, 'call_id'),
      peer: logField(l, 'peer'),
      granted: logField(l, 'granted'),
      reason: logField(l, 'reason'),
      nonce: logField(l, 'nonce'),
      pulse_ms: logField(l, 'pulse_ms'),
    }));
}

test('door opens over the data channel, rate-limited, replay and signaling refused', { skip, timeout: 180000 }, async () => {
  await withEnv('door_open', async (env) => {
    const setup = standaloneSetup(env);
    fs.appendFileSync(setup.configFile, `\n[door]\npulse_ms = ${PULSE_MS}\nremote_open_interval_ms = ${INTERVAL_MS}\n`);
    const { daemon, control } = await bringUpStandalone(env, setup);
    const idle = await control.state();
    assert.equal(idle.relay_energised, false, `relay de-energised at start: ${JSON.stringify(idle)}`);
    assert.equal(idle.relay_writes[0], false, 'the first relay write is the de-energised level');

    const browser = await env.browser({ secureOrigins: [setup.origin] });
    const flat = await env.page(browser, `${setup.origin}/#token=${setup.answerers[0].token}`, 'flat-1a');
    await waitForConnection(flat);

    // The button is not offered before a call.
    assert.equal(await flat.page.getByRole('button', { name: 'Open the door' }).isVisible(), false);

    await control.press();
    const ringing = await waitForState(flat, 'ringing', 10000);
    const callId = ringing.callId;
    await flat.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(flat, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    const openButton = flat.page.getByRole('button', { name: 'Open the door' });
    await waitFor(async () => openButton.isEnabled(), { timeout: 10000, message: 'Open door enabled (data channel open)' });

    // ---- Click: granted, the relay pulses for pulse_ms, the page says so.
    const writesBefore = (await control.state()).relay_write_count;
    await openButton.click();
    const clickedAt = Date.now();
    const granted = await waitFor(async () => {
      const r = await lastDoorResult(flat);
      return r && r.granted ? r : null;
    }, { timeout: 5000, interval: 50, message: 'the door to grant the open' });
    assert.equal(granted.pulse_ms, PULSE_MS);
    assert.equal(granted.reason, null);
    const energised = await waitFor(async () => {
      const s = await control.state();
      return s.relay_energised ? s : null;
    }, { timeout: 2000, interval: 50, message: 'the relay to be energised' });
    assert.equal(energised.relay_writes.at(-1), true);
    // The door logic's snapshot and the LEDs show the open door too.
    await waitFor(async () => {
      const s = await control.state();
      return s.door?.unlocked === true && s.door.station_state === 'door_open' && s.leds.status.pattern === 'slow_blink';
    }, { timeout: 2000, interval: 50, message: 'the status to show the door open' });
    assert.match(await doorStatus(flat), /^Door opened for 3 s$/);

    // ---- A second click inside the rate limit: refused with a reason.
    await openButton.click();
    const limited = await waitFor(async () => {
      const r = await lastDoorResult(flat);
      return r && r.nonce !== granted.nonce ? r : null;
    }, { timeout: 5000, interval: 50, message: 'the second click to be answered' });
    assert.equal(limited.granted, false);
    assert.equal(limited.reason, 'rate_limited');
    assert.match(await doorStatus(flat), /^Not opened: Please wait/);

    // ---- A replayed nonce on the same channel: refused.
    await flat.page.evaluate((n) => window.intercom.dataChannel.send(JSON.stringify({ type: 'open', nonce: n })), granted.nonce);
    const replay = await waitFor(async () => {
      const r = await lastDoorResult(flat);
      return r && r.reason === 'replay' ? r : null;
    }, { timeout: 5000, interval: 50, message: 'the replay to be refused' });
    assert.equal(replay.granted, false);

    // ---- The pulse ends by itself after pulse_ms.
    const released = await waitFor(async () => {
      const s = await control.state();
      return s.relay_energised === false ? { s, at: Date.now() } : null;
    }, { timeout: PULSE_MS + 3000, interval: 50, message: 'the relay to be released' });
    const measured = released.at - clickedAt;
    assert.ok(measured >= PULSE_MS - 300 && measured <= PULSE_MS + 1000,
      `relay released ${measured} ms after the click (pulse ${PULSE_MS} ms)`);
    // One pulse: energised once, released once.
    assert.equal(released.s.relay_write_count, writesBefore + 2, JSON.stringify(released.s));

    // ---- Forged over signaling during the call: refused by the hub.
    await flat.page.evaluate((cid) => window.intercom.send({ type: 'open', call_id: cid, nonce: 'forged-in-call' }), callId);
    await waitForLog(daemon, /AUDIT="?door_open.*nonce=forged-in-call/, { timeout: 5000 });

    // ---- Hang up, then a forged open and a replay over signaling.
    await flat.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(flat, 'idle', 5000);
    await control.waitForCallState(['idle', 'ended'], 10000);
    assert.equal(await openButton.isVisible(), false, 'no Open door button without a call');
    await flat.page.evaluate((cid) => window.intercom.send({ type: 'open', call_id: cid, nonce: 'forged-after-hangup' }), callId);
    await flat.page.evaluate(({ cid, n }) => window.intercom.send({ type: 'open', call_id: cid, nonce: n }), { cid: callId, n: granted.nonce });
    await waitFor(() => audits(daemon).filter((a) => a.source === 'signaling').length >= 3,
      { timeout: 5000, message: 'three refused signaling audit records' });
    await sleep(300);
    const after = await control.state();
    assert.equal(after.relay_energised, false);
    assert.equal(after.relay_write_count, writesBefore + 2, 'nothing after the pulse touched the relay');
    const errors = await pageEvents(flat, { kind: 'rx', type: 'error' });
    assert.equal(errors.filter((e) => e.code === 'not_permitted').length >= 3, true,
      `the hub answered not_permitted: ${JSON.stringify(errors)}`);

    // ---- The audit trail, in order.
    const trail = audits(daemon);
    const remote = trail.filter((a) => a.source === 'data_channel');
    assert.deepEqual(remote.map((a) => [a.granted, a.reason, a.nonce]), [
      ['true', '', granted.nonce],
      ['false', 'rate_limited', limited.nonce],
      ['false', 'replay', granted.nonce],
    ]);
    for (const a of remote) {
      assert.equal(a.call_id, callId);
      assert.equal(a.peer, 'flat-1a');
    }
    assert.equal(remote[0].pulse_ms, String(PULSE_MS));
    const viaSignaling = trail.filter((a) => a.source === 'signaling');
    assert.deepEqual(viaSignaling.map((a) => [a.granted, a.reason, a.nonce]), [
      ['false', 'not_permitted', 'forged-in-call'],
      ['false', 'not_permitted', 'forged-after-hangup'],
      ['false', 'not_permitted', granted.nonce],
    ]);
    assert.ok(viaSignaling.every((a) => a.peer === 'flat-1a' && a.call_id === callId));
    assert.equal(daemon.exitInfo, null, 'the daemon is still running');
  });
});
