// A bad link: 5 % loss and 0..40 ms of random delay (uniform: mean 20 ms,
// jitter ±20 ms, packets reordered) on the door's link, both directions,
// applied at its NAT box (lib/natrig.mjs impairDoorLink: iptables
// `-m statistic` for the loss, the NFQUEUE shim lib/nfq_delay.py for the
// delay). The call must set up and its audio stay continuous both ways:
// - content: the page hears the door's 600 Hz and the door's speaker plays
//   the page's 1000 Hz, as in every NAT test, then once a second through
//   the window: always something audible, the tone dominant in >= 2/3;
// - concealment, measured over a 15 s window: at the page from getStats
//   (inbound-rtp concealedSamples / totalSamplesReceived), at the door from
//   its `incoming audio quality` line (concealed and FEC-rebuilt packets of
//   the jitter buffer, packets received);
// - gaps: at the page an AudioWorklet on the remote track (lib/audioprobe.mjs)
//   measures runs below -60 dBFS; at the door the same line's
//   `longest_gap_ms` (playout ticks with nothing to play).
// The impairment is proven real: the loss rule dropped about 5 % of the packets
// it saw (within the binomial spread), the shim delayed all the others
// (mean 15–30 ms: 20 ms plus the shim's own scheduling lateness on a busy
// machine) and reordered some.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canUseNetns, sleep } from './lib/util.mjs';
import { daemonSkipReason, logField, logTime, waitForLog } from './lib/daemon.mjs';
import { withRig, natRigSkipReason } from './lib/natrig.mjs';
import { bringUpNatCall, turnServers, DOOR_TONE, MIC_TONE } from './lib/natcall.mjs';
import { waitForState, expectRemoteTone } from './lib/answerer.mjs';
import { expectDoorHears, TOL_HZ } from './lib/checks.mjs';
import { wavTailDominant } from './lib/wav.mjs';
import { audioProbeInit, inboundDelta } from './lib/audioprobe.mjs';
import fs from 'node:fs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)'
  : (daemonSkipReason() || natRigSkipReason() || (!fs.existsSync('/usr/bin/python3') && '/usr/bin/python3 not installed'));

const LOSS_PCT = 5;
const DELAY_MAX_MS = 40;
const WINDOW_MS = 15000;
// Bounds. Measured on this rig (BENCHMARKS.md, "Calls on a bad link"):
// concealed 2–6 % at the page and under 1.5 % at the door, no gap at the
// door and at most 24 ms at the page, set-up 0.5–2.5 s after Accept.
const MAX_CONCEALED_FRACTION = 0.12;
const MAX_GAP_MS = 200;
const MAX_SETUP_MS = 10000;
const MIN_TONE_SHARE = 2 / 3;

test(`${LOSS_PCT} % loss and 0..${DELAY_MAX_MS} ms jitter on the door's link: the call sets up, audio stays continuous`, { skip, timeout: 150000 }, async () => {
  await withRig({}, async (rig) => {
    await rig.startTurn();
    const s = await bringUpNatCall(rig, {
      servers: turnServers(rig, ['stun']),
      pageInit: audioProbeInit,
      // The media actor's debug lines name every local candidate and pair;
      // the DTLS layer's tell how far its handshake got.
      logLevel: process.env.E2E_DOOR_LOG || 'info,intercomd::media::rtc=debug,rtc_dtls=debug,webrtc=warn,rtc=warn',
    });
    const link = await rig.impairDoorLink({ lossPct: LOSS_PCT, delayMinMs: 0, delayMaxMs: DELAY_MAX_MS });
    let shimFigures = null;
    try {
      // The call, set up through the bad link.
      const from = s.door.lines.length;
      const pressAt = Date.now();
      await s.control.press();
      const ringing = await waitForState(s.page, 'ringing', 15000);
      const acceptAt = Date.now();
      await s.page.page.getByRole('button', { name: 'Accept the call' }).click();
      await waitForState(s.page, 'in_call', 20000);
      const established = await waitForLog(s.door, /AUDIO CONNECTION ESTABLISHED/, { from, timeout: 20000 });
      await expectRemoteTone(s.page, DOOR_TONE, { timeout: 15000 });
      await expectDoorHears(s.recordFile, MIC_TONE, { timeout: 15000 });
      const pageFirstAudio = await s.page.page.evaluate(() => window.intercom.firstAudioAtEpoch);
      const setup = {
        ringMs: ringing.ringAtEpoch ? Math.round(ringing.ringAtEpoch - pressAt) : null,
        establishedMs: Math.round(logTime(established.line) - acceptAt),
        pageFirstAudioMs: pageFirstAudio ? Math.round(pageFirstAudio - acceptAt) : null,
      };
      assert.ok(setup.establishedMs < MAX_SETUP_MS, `media established ${setup.establishedMs} ms after Accept`);
      assert.equal(await s.page.page.evaluate(() => window.__probe.error), null, 'the page probe runs');

      // The measured window.
      const probe = (what) => s.page.page.evaluate((w) => window.__probe.gaps[w](), what);
      const inbound = () => s.page.page.evaluate(() => window.__probe.inbound());
      const state0 = await s.control.state();
      const in0 = await inbound();
      const outbound = () => s.page.page.evaluate(() => window.__probe.outbound());
      const out0 = await outbound();
      await probe('reset');
      const samples = [];
      const source = () => s.page.page.evaluate(() => window.__probe.source());
      let src = await source();
      const t0 = Date.now();
      while (Date.now() - t0 < WINDOW_MS) {
        await sleep(1000);
        // What the page's own microphone gave over that second (mean power).
        // Once the door played 1.4 s of silence while its jitter buffer
        // reported no gap and few concealed packets: either Chromium's fake
        // capture fell silent (a loaded machine) or the door decoded
        // silence. This tells the two apart: a quiet microphone excuses the
        // door for that second, a silent door with a working one fails.
        const src1 = await source();
        const mic = src && src1 && src1.duration > src.duration ? (src1.energy - src.energy) / (src1.duration - src.duration) : null;
        src = src1;
        const hz = await s.page.page.evaluate(() => window.intercom.remoteDominantHz());
        let door = null;
        for (let attempt = 0; attempt < 3; attempt++) {
          try {
            door = wavTailDominant(s.recordFile, 0.5).hz;
            break;
          } catch { await sleep(50); } // caught mid-write: read again
        }
        samples.push({ page: hz, door, mic });
      }
      const gaps = await probe('read');
      const in1 = await inbound();
      const out1 = await outbound();
      const state1 = await s.control.state();
      const page = inboundDelta(in0, in1);
      const counts = await link.counters();

      // Content, all along the window (one reading a second each side).
      const near = (hz, f) => hz !== null && Math.abs(hz - f) <= TOL_HZ;
      const pageHeard = samples.filter((x) => near(x.page, DOOR_TONE)).length;
      // The door is judged on the seconds in which the page's microphone
      // itself captured its tone at full power (within 6 dB of the median).
      const mics = samples.map((x) => x.mic).filter((m) => m !== null).sort((a, b) => a - b);
      const micMedian = mics.length ? mics[Math.floor(mics.length / 2)] : null;
      const doorSamples = samples.filter((x) => micMedian !== null && x.mic !== null && x.mic >= micMedian / 4);
      const micQuiet = samples.length - doorSamples.length;
      const doorHeard = doorSamples.filter((x) => near(x.door, MIC_TONE)).length;

      await s.control.hangup();
      await s.control.waitForNoCall(10000);
      const quality = await waitForLog(s.door, /incoming audio quality/, { from, timeout: 10000 });
      shimFigures = await link.stop();
      const door = Object.fromEntries(['packets', 'frames_out', 'concealed', 'fec_recovered', 'late', 'underruns',
        'stretched', 'dropped_for_latency', 'silent_ms', 'longest_gap_ms', 'target_ms'].map((k) => [k, Number(logField(quality.line, k))]));
      // A packet is 20 ms, two playout frames: the share of what the door
      // played that was concealment.
      const doorConcealedFraction = (2 * door.concealed) / Math.max(1, door.frames_out);
      const playedFrames = (state1.audio?.played_frames ?? 0) - (state0.audio?.played_frames ?? 0);
      const lossSeen = counts.dropped / Math.max(1, counts.dropped + counts.queued);

      const report = {
        setup,
        link: { dropped: counts.dropped, passed: counts.queued, lossPct: +(lossSeen * 100).toFixed(2), shim: shimFigures },
        pageSends: {
          kbps: +((8 * (out1.bytesSent - out0.bytesSent)) / (out1.t - out0.t)).toFixed(1),
          packetsPerSecond: +((1000 * (out1.packetsSent - out0.packetsSent)) / (out1.t - out0.t)).toFixed(1),
          packetsSentInCall: out1.packetsSent,
          targetKbps: [out0.targetBitrate, out1.targetBitrate].map((b) => (b ? b / 1000 : null)),
        },
        page: { ...page, concealedFraction: +(page.concealedFraction ?? -1).toFixed(4), gaps, heardTone: `${pageHeard}/${samples.length}` },
        door: { ...door, concealedFraction: +doorConcealedFraction.toFixed(4), playedFramesInWindow: playedFrames, heardTone: `${doorHeard}/${doorSamples.length}`, micQuietSeconds: micQuiet, micMedianPower: micMedian },
      };
      process.stderr.write(`IMPAIRED_RESULT ${JSON.stringify(report)}\n`);

      // The impairment was real.
      // Within 4.5 standard deviations of the binomial for the packets seen.
      const seen = counts.dropped + counts.queued;
      const p = LOSS_PCT / 100;
      const tol = 4.5 * Math.sqrt((p * (1 - p)) / Math.max(1, seen));
      assert.ok(seen > 1000 && Math.abs(lossSeen - p) <= tol,
        `the loss rule dropped ${(lossSeen * 100).toFixed(2)} % of ${seen} packets (${LOSS_PCT} ± ${(tol * 100).toFixed(2)})\n${counts.listing}`);
      assert.ok(shimFigures.packets > 1000, `the shim delayed ${shimFigures.packets} packets`);
      assert.ok(shimFigures.delay_mean_ms >= 15 && shimFigures.delay_mean_ms <= 30, `mean delay ${shimFigures.delay_mean_ms} ms`);
      assert.ok(shimFigures.reordered > 0, 'the jitter reordered packets');
      assert.ok(page.packetsLost > 0, `the page saw loss: ${JSON.stringify(page)}`);
      assert.ok(door.fec_recovered + door.concealed > 0, `the door saw loss: ${quality.line}`);

      // The call and its audio.
      assert.equal(state1.call.state, 'in_call', 'the call held through the window');
      // Something audible at every reading; the far end's tone dominant in
      // most. Not in all: the door's speaker sometimes plays the page's tone
      // distorted for a few hundred ms (0.1 s blocks dominated by
      // 830–1120 Hz). In the run examined closely its jitter buffer had
      // skipped 40 packets and stretched 8 while its target sat at the
      // 200 ms ceiling (BENCHMARKS.md, "Calls on a bad link").
      assert.ok(micQuiet <= 3, `the page's microphone captured its tone in most seconds (${micQuiet} quiet): ${JSON.stringify(samples)}`);
      assert.ok(samples.every((x) => x.page !== null), `the page heard something at every reading: ${JSON.stringify(samples)}`);
      assert.ok(doorSamples.every((x) => x.door !== null), `the door heard something at every reading: ${JSON.stringify(samples)}`);
      assert.ok(pageHeard >= Math.ceil(samples.length * MIN_TONE_SHARE),
        `the page heard ${DOOR_TONE} Hz in ${pageHeard} of ${samples.length} readings: ${JSON.stringify(samples)}`);
      assert.ok(doorHeard >= Math.ceil(doorSamples.length * MIN_TONE_SHARE),
        `the door heard ${MIC_TONE} Hz in ${doorHeard} of ${doorSamples.length} readings: ${JSON.stringify(samples)}`);
      assert.ok(page.concealedFraction !== null && page.concealedFraction < MAX_CONCEALED_FRACTION,
        `page concealed ${page.concealed}/${page.samples} samples`);
      assert.ok(gaps.heard && gaps.heardMs >= WINDOW_MS - 1000, `the page's probe heard the window: ${JSON.stringify(gaps)}`);
      assert.ok(gaps.longestGapMs <= MAX_GAP_MS, `longest silence at the page ${gaps.longestGapMs} ms (bound ${MAX_GAP_MS})`);
      assert.ok(doorConcealedFraction < MAX_CONCEALED_FRACTION, `door concealed ${door.concealed} packets, ${door.frames_out} frames played`);
      assert.ok(door.longest_gap_ms <= MAX_GAP_MS, `longest silence at the door ${door.longest_gap_ms} ms (bound ${MAX_GAP_MS})`);
      // 100 frames a second reach the door's speaker: nothing missing.
      assert.ok(playedFrames >= (WINDOW_MS / 10) * 0.95, `the door's speaker got ${playedFrames} frames in ${WINDOW_MS} ms`);
      assert.equal(ringing.callId, state0.call.call_id, 'the same call');
    } catch (err) {
      // The page's side of the ICE story, for the diagnosis.
      const events = await s.page.page.evaluate(() => window.intercom.events.filter((e) => e.type === 'candidate' || e.kind === 'state'))
        .catch(() => []);
      const pairs = await s.page.page.evaluate(() => window.__probe.pairs()).catch((e) => String(e));
      process.stderr.write(`page signaling (candidates, states):\n${events.map((e) => JSON.stringify(e)).join('\n')}\n`
        + `page ICE candidate pairs and DTLS transport: ${JSON.stringify(pairs)}\n`);
      throw err;
    } finally {
      if (!shimFigures) await link.stop().catch(() => {});
    }
  });
});
