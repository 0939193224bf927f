// Self-test of the harness, independent of the daemon: a namespace, a small
// Node hub serving web/, the answering page in one Chromium (1000 Hz fake
// microphone) and the browser door (door_page.html, 600 Hz) in another.
// A full call must carry each tone to the other side, and hang-up must work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withEnv } from './lib/fixture.mjs';
import { waitFor, randomToken, canUseNetns } from './lib/util.mjs';
import { waitForConnection, waitForState, expectRemoteTone, intercomSnapshot, pageEvents } from './lib/answerer.mjs';
import { dominantFrequency, parseWav, writeSineWav } from './lib/wav.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = path.resolve(here, '../../web');
const skip = canUseNetns() ? false : 'needs root and iproute2 (network namespaces)';

test('WAV writer and Goertzel detector agree, growing-file header tolerated', () => {
  const dir = fs.mkdtempSync('/tmp/ic-wav-');
  try {
    const f = writeSineWav(path.join(dir, 'a.wav'), { freq: 1234, seconds: 1 });
    const buf = fs.readFileSync(f);
    buf.writeUInt32LE(0, 40); // data size not yet updated by the writer
    buf.writeUInt32LE(36, 4);
    const { sampleRate, samples } = parseWav(buf);
    assert.equal(sampleRate, 48000);
    assert.equal(samples.length, 48000);
    const d = dominantFrequency(samples, sampleRate);
    assert.ok(Math.abs(d.hz - 1234) <= 2, `detected ${d.hz} Hz, expected 1234`);
    const silent = dominantFrequency(new Float32Array(48000), 48000);
    assert.equal(silent.hz, null);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('browser door and answering page complete a call through a small hub', { skip, timeout: 120000 }, async () => {
  await withEnv('plumbing', async (env) => {
    const { ns } = env;
    const hubAddr = `${ns.addrA}:8080`;
    const origin = `http://${hubAddr}`;
    const doorToken = randomToken();
    const flatToken = randomToken();
    const cfg = env.file('mini_hub.json');
    fs.writeFileSync(cfg, JSON.stringify({
      doors: [{ id: 'door-1', name: 'Front door', token: doorToken }],
      answerers: [{ id: 'flat-1a', name: 'Flat 1A', token: flatToken, groups: ['residents'] }],
    }));
    const hub = env.spawn('mini_hub', process.execPath, [path.join(here, 'lib/mini_hub.mjs'), hubAddr, cfg, webDir]);
    await waitFor(() => hub.lines.some((l) => l.includes('listening')) || hub.exitInfo, { timeout: 10000, message: 'mini hub to listen' });
    assert.equal(hub.exitInfo, null, 'mini hub exited early');

    const doorBrowser = await env.browser({ micHz: 600, secureOrigins: [origin], name: 'door', routedPages: true });
    const flatBrowser = await env.browser({ micHz: 1000, secureOrigins: [origin], name: 'flat' });
    const doorHtml = fs.readFileSync(path.join(here, 'door_page.html'), 'utf8');
    await doorBrowser.route(`${origin}/door.html`, (route) => route.fulfill({ contentType: 'text/html', body: doorHtml }));

    const flat = await env.page(flatBrowser, `${origin}/?raw=1#token=${flatToken}`, 'flat-1a');
    const door = await env.page(doorBrowser, `${origin}/door.html#token=${doorToken}`, 'door');
    await waitForConnection(flat);
    await waitFor(() => door.page.evaluate(() => window.door.connected && window.door.micReady), { timeout: 10000, message: 'browser door ready' });

    await door.page.evaluate(() => window.door.ring('c-plumb-1'));
    const ringing = await waitForState(flat, 'ringing');
    assert.equal(ringing.doorNameShown, 'Front door');
    assert.equal(ringing.callId, 'c-plumb-1');
    await flat.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(flat, 'in_call', 15000);

    await expectRemoteTone(flat, 600, { timeout: 10000 });
    await expectRemoteTone({ label: 'door', page: door.page }, 1000, { timeout: 10000 });
    const snap = await intercomSnapshot(flat.page);
    assert.ok(snap.firstAudioAt > 0, 'first audio packet timestamp recorded');
    assert.equal(snap.peerConnections, 1);
    await waitFor(async () => (await intercomSnapshot(flat.page)).dataChannel?.readyState === 'open', { timeout: 5000, message: 'data channel from the door open' });

    // Mute silences the tone at the door; unmute brings it back.
    await flat.page.getByRole('button', { name: 'Mute microphone' }).click();
    await waitFor(async () => {
      const hz = await door.page.evaluate(() => window.door.remoteDominantHz());
      return hz === null || Math.abs(hz - 1000) > 30;
    }, { timeout: 5000, message: 'door to stop hearing 1000 Hz after mute' });
    await flat.page.getByRole('button', { name: 'Unmute microphone' }).click();
    await expectRemoteTone({ label: 'door', page: door.page }, 1000, { timeout: 5000 });

    await flat.page.getByRole('button', { name: 'Hang up' }).click();
    const ended = await waitForState(flat, 'idle');
    assert.equal(ended.message, 'Call ended');
    await waitFor(() => door.page.evaluate(() => window.door.state === 'idle'), { timeout: 5000, message: 'door back to idle' });
    const tx = await pageEvents(flat, { kind: 'tx', type: 'hangup' });
    assert.equal(tx.length, 1);
    assert.equal(tx[0].reason, 'normal');

    // Second call: the door hangs up.
    await door.page.evaluate(() => window.door.ring('c-plumb-2'));
    await waitForState(flat, 'ringing');
    await flat.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(flat, 'in_call', 15000);
    await expectRemoteTone(flat, 600, { timeout: 10000 });
    await door.page.evaluate(() => window.door.hangup('normal'));
    const ended2 = await waitForState(flat, 'idle');
    assert.equal(ended2.message, 'Call ended');

    // The token never reaches the console.
    for (const p of [flat, door]) {
      assert.ok(!p.console.some((l) => l.includes(flatToken) || l.includes(doorToken)), `${p.label} console shows a token`);
    }
  });
});
