// The first call on the ALSA backend, and echo in a whole call.
//
// 1. The daemon runs with audio.backend = "alsa" on ALSA's user-space `file`
//    PCMs (ALSA_CONFIG_PATH in its environment names our asoundrc): the
//    microphone reads a raw 48 kHz mono S16 tone file, the speaker writes a
//    raw file. Audio is checked by content both ways: the page hears the
//    microphone file's 700 Hz, the playback file holds Chromium's 1000 Hz
//    (and, before the call, the 425 Hz ringback).
// 2. Echo: the simulated backend's echo path (`[audio.sim] echo_path`,
//    30 ms delay, -6 dB, 120 ms decaying tail) feeds what the door plays
//    back into its microphone. Both sides talk: speech-like voices (syllables
//    and pauses, a pitch through formants) kept to separate bands so the
//    page can tell them apart by content. Chromium's microphone (the
//    resident) talks below 1.4 kHz; the door's visitor (a looped WAV) above
//    2 kHz, quieter than the echo, as at a door station whose speaker sits
//    next to its microphone. So there is single talk from each side and
//    double talk. (Pure tones are no test of an echo canceller: a steady
//    far-end tone is left alone, and a tonal near end can pull AEC3's filter
//    off the room, measured offline at 4 to 70 dB from one burst phase to
//    the next; speech on both sides gave 36 to 59 dB. See BENCHMARKS.md.)
//    A file PCM cannot do this live (its infile is read as written
//    beforehand), hence the simulated route. The page measures the power of
//    its own band coming back (the echo) and of the visitor's band, with the
//    capture processing off and on: the echo-to-visitor ratio must improve
//    by at least 25 dB, and the visitor stay.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, sleep } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone } from './lib/answerer.mjs';
import { writeRawTone, expectRawHears, rawBlocks, remoteBandLevels } from './lib/tones.mjs';
import { speechLikeSamples, writePcmWav } from './lib/wav.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const DOOR_TONE = 700; // the capture infile
const MIC_TONE = 1000; // Chromium's fake microphone WAV
const RINGBACK = 425;

function asoundrc(infile, outfile) {
  return `pcm.doorcap {
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "${infile}"
    format "raw"
}
pcm.doorplay {
    type file
    slave.pcm "null"
    file "${outfile}"
    format "raw"
}
`;
}

test('ALSA backend on file PCMs: ring, accept, two-way audio by content, hang-up', { skip, timeout: 180000 }, async () => {
  await withEnv('alsa_call', async (env) => {
    const infile = env.file('mic.raw');
    const outfile = env.file('speaker.raw');
    const conf = env.file('asoundrc');
    // Read from the daemon's start at the real rate: 150 s outlasts the
    // test; the padding keeps the plugin's end-of-file repeat silent.
    writeRawTone(infile, { freq: DOOR_TONE, seconds: 150, padSeconds: 2 });
    fs.writeFileSync(conf, asoundrc(infile, outfile));
    const setup = standaloneSetup(env, {
      audio: { backend: 'alsa', captureDevice: 'doorcap', playbackDevice: 'doorplay', pacing: 'timer' },
    });
    const { daemon, control } = await bringUpStandalone(env, setup, {
      extraEnv: { ALSA_CONFIG_PATH: `/usr/share/alsa/alsa.conf:${conf}` },
    });
    assert.ok(daemon.lines.some((l) => /audio/i.test(l) && /doorcap/.test(l)), 'the daemon opened the ALSA capture PCM');
    assert.ok(!daemon.lines.some((l) => /SIMULATED/.test(l) && /audio/.test(l)), 'no simulated audio');

    const browser = await env.browser({ micHz: MIC_TONE, secureOrigins: [setup.origin] });
    const flat = await env.page(browser, `${setup.origin}/?raw=1#token=${setup.answerers[0].token}`, 'flat-1a');
    await waitForConnection(flat);

    await control.press();
    await waitForState(flat, 'ringing', 10000);
    // Ringback plays in the door's speaker while the residents are rung.
    await sleep(1500);
    await flat.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(flat, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);

    await expectRemoteTone(flat, DOOR_TONE, { timeout: 15000 });
    await expectRawHears(outfile, MIC_TONE, { timeout: 15000 });
    const st = await control.state();
    assert.ok(st.audio && st.audio.captured_frames > 0, `door captured audio: ${JSON.stringify(st.audio)}`);
    assert.ok(st.audio.played_frames > 0, `door played audio: ${JSON.stringify(st.audio)}`);

    // Mute at the page silences the flat in the door's speaker file.
    await flat.page.getByRole('button', { name: 'Mute microphone' }).click();
    // The speaker file trails the call by the jitter buffer and the file
    // PCM's period, more on a loaded machine: wait (bounded) for two whole
    // half-second blocks without the flat's tone.
    let muted = [];
    const quietBy = Date.now() + 6000;
    for (;;) {
      await sleep(500);
      muted = rawBlocks(outfile, 0.5).slice(-2);
      if (muted.every((hz) => hz === null || Math.abs(hz - MIC_TONE) > 30)) break;
      assert.ok(Date.now() < quietBy, `muted: last blocks ${JSON.stringify(muted)}`);
    }
    await flat.page.getByRole('button', { name: 'Unmute microphone' }).click();
    await expectRawHears(outfile, MIC_TONE, { timeout: 10000 });

    await flat.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(flat, 'idle', 5000);
    await control.waitForNoCall(10000);
    assert.equal(daemon.exitInfo, null, 'the daemon is still running');

    // The speaker file tells the story in order: ringback, then the flat.
    const blocks = rawBlocks(outfile, 0.5);
    const firstRing = blocks.findIndex((hz) => hz !== null && Math.abs(hz - RINGBACK) <= 30);
    const firstFlat = blocks.findIndex((hz) => hz !== null && Math.abs(hz - MIC_TONE) <= 30);
    assert.ok(firstRing >= 0, `ringback in the speaker file: ${JSON.stringify(blocks)}`);
    assert.ok(firstFlat > firstRing, `the flat after the ringback: ${JSON.stringify(blocks)}`);
  });
});

// The resident's band (what comes back as echo) and the visitor's band, Hz.
const RESIDENT_BAND = [200, 1300];
const VISITOR_BAND = [2300, 3800];

/** One call with the echo path; returns the page's levels (dBFS) of [echo, near end]. */
async function echoCall(processing) {
  return withEnv(`alsa_call echo processing=${processing}`, async (env) => {
    const visitor = writePcmWav(env.file('visitor.wav'), speechLikeSamples({
      seconds: 20, seed: 3, band: [2000, 4000], formants: [[2300, 2800], [3000, 3600]], amplitude: 0.1,
    }));
    const resident = writePcmWav(env.file('resident.wav'), speechLikeSamples({
      seconds: 20, seed: 7, band: [150, 1400], formants: [[300, 700], [800, 1300]], amplitude: 0.5,
    }));
    const setup = standaloneSetup(env, {
      audio: { source: `wav:${visitor}`, echoPath: '30:-6', processing },
    });
    const { control } = await bringUpStandalone(env, setup);
    const browser = await env.browser({ micWav: resident, secureOrigins: [setup.origin] });
    const flat = await env.page(browser, `${setup.origin}/?raw=1#token=${setup.answerers[0].token}`, 'flat-1a');
    await waitForConnection(flat);
    await control.press();
    await waitForState(flat, 'ringing', 10000);
    await flat.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(flat, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    // The echo canceller converges within a few seconds of far-end speech.
    await sleep(6000);
    const levels = await remoteBandLevels(flat.page, [RESIDENT_BAND, VISITOR_BAND], { reads: 30, intervalMs: 150 });
    await control.hangup();
    await control.waitForNoCall(10000);
    return levels;
  });
}

test('echo in a whole call: the door\'s processing removes the resident\'s own voice coming back', { skip, timeout: 180000 }, async () => {
  // Off first: with nothing in the way, the page must hear its own echo.
  const [echoOff, nearOff] = await echoCall(false);
  const [echoOn, nearOn] = await echoCall(true);
  const improvement = (echoOff - nearOff) - (echoOn - nearOn);
  const report = `resident band (echo) off ${echoOff.toFixed(1)} dBFS, on ${echoOn.toFixed(1)} dBFS (${(echoOff - echoOn).toFixed(1)} dB down); ` +
    `visitor band off ${nearOff.toFixed(1)}, on ${nearOn.toFixed(1)} dBFS; echo-to-visitor ratio improved by ${improvement.toFixed(1)} dB`;
  process.stderr.write(`ECHO_RESULT ${report}\n`);
  assert.ok(echoOff > nearOff, `without processing the echo is louder than the visitor: ${report}`);
  assert.ok(improvement >= 25, `echo suppressed by at least 25 dB relative to the visitor: ${report}`);
  assert.ok(echoOff - echoOn >= 15, `the echo itself drops, whatever the gain control does: ${report}`);
  assert.ok(nearOn > echoOn + 10, `the visitor dominates with processing on: ${report}`);
  assert.ok(nearOn > nearOff - 6, `the visitor is kept: ${report}`);
});
