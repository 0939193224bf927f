// A resident without a microphone still answers, hears the door and opens
// it: the page opened at the station's plain http LAN address (browsers give
// the microphone to https pages only), and a page whose microphone is
// blocked. The station takes the listen-only answer as a call that is up
// once its connection is, never as a network failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone, waitForLog, logField } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, intercomSnapshot, pageEvents } from './lib/answerer.mjs';
import { denyMicrophone } from './lib/browser.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const DOOR_TONE = 600; // [audio.sim] source
const PULSE_MS = 2000;
const PUBLIC_URL = 'https://door.example.net:8443/';
const RECEIVING_TIMEOUT_MS = 3000;

function notice(p) {
  return p.page.evaluate(() => {
    const el = (id) => document.getElementById(id);
    return {
      shown: !el('mic-notice').hidden,
      text: el('mic-notice-text').textContent,
      linkShown: !el('mic-notice-link').hidden,
      linkText: el('mic-notice-href').textContent,
      linkHref: el('mic-notice-href').getAttribute('href'),
      askShown: !el('mic-notice-ask').hidden,
      kind: window.intercom.micNotice,
      secure: window.isSecureContext,
      mediaDevices: !!navigator.mediaDevices,
    };
  });
}

/** Answer, hear the door, open it; returns figures for the report. */
async function answerListenOnly(env, setup, daemon, control, flat, callId) {
  const acceptedAt = Date.now();
  await flat.page.getByRole('button', { name: 'Accept the call' }).click();
  const talking = await waitForState(flat, 'in_call', 20000);
  const inCallMs = Date.now() - acceptedAt;
  assert.equal(talking.message, 'Listening to Front door');
  await control.waitForCallState('in_call', 10000);
  const doorInCallMs = Date.now() - acceptedAt;
  const readings = await expectRemoteTone(flat, DOOR_TONE, { timeout: 15000 });
  const heardMs = Date.now() - acceptedAt;
  const snap = await intercomSnapshot(flat.page);
  assert.equal(snap.lastError?.code === 'microphone' || snap.lastError === null, true, JSON.stringify(snap.lastError));
  assert.equal(await flat.page.evaluate(() => window.intercom.listenOnly), true);
  assert.equal(await flat.page.getByRole('button', { name: 'Mute microphone' }).isDisabled(), true, 'no microphone to mute');

  // Open the door over the data channel.
  const openButton = flat.page.getByRole('button', { name: 'Open the door' });
  await waitFor(async () => openButton.isEnabled(), { timeout: 10000, message: 'Open door enabled (data channel open)' });
  await openButton.click();
  const granted = await waitFor(async () => {
    const r = await flat.page.evaluate(() => window.intercom.lastDoorResult);
    return r && r.granted ? r : null;
  }, { timeout: 5000, interval: 50, message: 'the door to grant the open' });
  assert.equal(granted.pulse_ms, PULSE_MS);
  await waitFor(async () => (await control.state()).relay_energised, { timeout: 2000, interval: 50, message: 'the relay pulse' });
  const audit = await waitForLog(daemon, /AUDIT="?door_open.*granted=true/, { timeout: 5000 });
  assert.equal(logField(audit.line, 'call_id'), callId);
  assert.equal(logField(audit.line, 'source'), 'data_channel');

  // The station's account: listen-only, not a network failure.
  const line = (await waitForLog(daemon, /answered without a microphone/, { timeout: 5000 })).line;
  assert.equal(logField(line, 'call_id'), callId, line);
  assert.equal(logField(line, 'peer'), 'flat-1a', line);
  assert.match(line, /INFO/, line);
  const hz = readings.slice(-3);
  return { inCallMs, doorInCallMs, heardMs, hz };
}

test('no microphone over plain http on the LAN: the page explains, the resident listens and opens the door', { skip, timeout: 180000 }, async () => {
  await withEnv('no_microphone_http', async (env) => {
    const setup = standaloneSetup(env, { tone: DOOR_TONE, publicUrl: PUBLIC_URL });
    // A short receiving timeout: a listen-only call, which never receives
    // audio, must outlive it without being taken for a dead path.
    fs.appendFileSync(setup.configFile, `\n[door]\npulse_ms = ${PULSE_MS}\n\n[ice]\nreceiving_timeout_ms = ${RECEIVING_TIMEOUT_MS}\n`);
    const { daemon, control } = await bringUpStandalone(env, setup);

    // The hub's veth address, no flag making it secure: what a phone on the LAN gets.
    const browser = await env.browser({});
    const flat = await env.page(browser, `${setup.origin}/?raw=1#token=${setup.answerers[0].token}`, 'flat-1a');
    await waitForConnection(flat);
    const shown = await waitFor(async () => {
      const n = await notice(flat);
      return n.shown && n.linkShown ? n : null;
    }, { timeout: 5000, message: 'the explanation with the https address' });
    assert.equal(shown.secure, false, 'the page is not a secure context');
    assert.equal(shown.kind, 'insecure');
    assert.equal(shown.linkText, PUBLIC_URL);
    assert.equal(shown.linkHref, PUBLIC_URL);
    assert.equal(shown.askShown, false);
    assert.match(shown.text, /microphone/);
    assert.doesNotMatch(shown.text, /secure context|getUserMedia|WebRTC/i, 'no jargon');
    assert.equal(await flat.page.getByText(PUBLIC_URL).isVisible(), true);

    await control.press();
    const ringing = await waitForState(flat, 'ringing', 10000);
    const figures = await answerListenOnly(env, setup, daemon, control, flat, ringing.callId);
    const snap = await intercomSnapshot(flat.page);
    assert.equal(snap.micRequests, 0, 'no microphone asked for where the browser has none to give');
    assert.equal(snap.lastError, null, `no error: ${JSON.stringify(snap.lastError)}`);
    assert.equal(daemon.lines.some((l) => l.includes('remote_sends_audio=false')), true, 'the station saw a recvonly answer');

    // Past twice the receiving timeout, the call is still up, the door
    // still heard, and no recovery was started.
    await new Promise((r) => setTimeout(r, 2 * RECEIVING_TIMEOUT_MS + 1000));
    assert.equal((await control.state()).call.state, 'in_call');
    await expectRemoteTone(flat, DOOR_TONE, { timeout: 5000 });
    assert.equal(daemon.lines.some((l) => /call media lost|ICE restart|media state changed.*Disconnected/.test(l)), false,
      'no recovery of a listen-only call');
    await flat.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(flat, 'idle', 5000);
    await control.waitForNoCall(10000);
    const ended = daemon.lines.find((l) => /call ended/.test(l) && l.includes(ringing.callId));
    assert.match(ended, /hung up by the resident/, ended);
    assert.equal(daemon.lines.some((l) => l.includes('media did not connect in time')), false);
    assert.equal(daemon.lines.some((l) => l.includes('call media lost')), false);
    process.stderr.write(`no_microphone_http: accept→page in call ${figures.inCallMs} ms, door in call ${figures.doorInCallMs} ms, ` +
      `door tone heard ${figures.heardMs} ms after accept at ${JSON.stringify(figures.hz)} Hz\n`);

    // Without a public address the page asks for the installer instead.
    const bare = await browser.newPage();
    await bare.route('**/client.json', (route) => route.fulfill({ contentType: 'application/json', body: '{"https_url":null}' }));
    await bare.goto(`${setup.origin}/`);
    const ask = await waitFor(async () => {
      const n = await notice({ page: bare });
      return n.shown && n.askShown ? n : null;
    }, { timeout: 5000, message: 'the ask-the-installer explanation' });
    assert.equal(ask.linkShown, false);
    assert.equal(await bare.getByText('switch on its secure (HTTPS) address').isVisible(), true);
  });
});

test('microphone blocked: the page says how to allow it, the call goes on listen-only for the one who answered', { skip, timeout: 180000 }, async () => {
  await withEnv('no_microphone_denied', async (env) => {
    const setup = standaloneSetup(env, {
      tone: DOOR_TONE,
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A' },
        { id: 'flat-1b', name: 'Flat 1B' },
      ],
    });
    fs.appendFileSync(setup.configFile, `\n[door]\npulse_ms = ${PULSE_MS}\n`);
    const { daemon, control } = await bringUpStandalone(env, setup);
    const [tokA, tokB] = setup.answerers;

    // A secure origin, the microphone blocked (no fake permission UI).
    const blocked = await env.browser({ secureOrigins: [setup.origin], fakeMediaUi: false, name: 'blocked' });
    const a = await env.page(blocked, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-1a');
    await denyMicrophone(blocked, a.page, setup.origin);
    const other = await env.browser({ secureOrigins: [setup.origin], name: 'other' });
    const b = await env.page(other, `${setup.origin}/?raw=1#token=${tokB.token}`, 'flat-1b');
    await waitForConnection(a);
    await waitForConnection(b);
    const before = await notice(a);
    assert.equal(before.secure, true);
    assert.equal(before.shown, false, 'nothing to explain before the microphone is asked for');
    assert.equal(await a.page.evaluate(async () => (await navigator.permissions.query({ name: 'microphone' })).state), 'denied');

    await control.press();
    const ringing = await waitForState(a, 'ringing', 10000);
    await waitForState(b, 'ringing', 10000);
    const figures = await answerListenOnly(env, setup, daemon, control, a, ringing.callId);
    const n = await notice(a);
    assert.equal(n.shown, true);
    assert.equal(n.kind, 'denied');
    assert.match(n.text, /lock or settings icon beside the address/);
    assert.match(n.text, /reload/);
    const snapA = await intercomSnapshot(a.page);
    assert.equal(snapA.micRequests, 1);
    assert.match(snapA.lastError.message, /^NotAllowedError/);

    // The other flat was told, once, that the call was taken; the call goes on.
    const takenB = await waitForState(b, 'idle', 5000);
    assert.equal(takenB.message, 'Answered by Flat 1A');
    const hangups = await pageEvents(a, { kind: 'tx', type: 'hangup' });
    assert.deepEqual(hangups, [], 'the page that answered did not hang up');
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await control.state()).call.state, 'in_call');
    assert.equal((await intercomSnapshot(a.page)).state, 'in_call');

    await control.hangup();
    await waitForState(a, 'idle', 5000);
    assert.equal(daemon.lines.some((l) => l.includes('media did not connect in time')), false);
    process.stderr.write(`no_microphone_denied: accept→page in call ${figures.inCallMs} ms, door in call ${figures.doorInCallMs} ms, ` +
      `door tone heard ${figures.heardMs} ms after accept at ${JSON.stringify(figures.hz)} Hz\n`);
  });
});
