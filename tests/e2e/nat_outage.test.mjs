// A network outage mid-call: the door's uplink is cut at its NAT for 10 s
// (both directions dropped in FORWARD), then restored. The call survives
// (media-lost timeout ice.receiving_timeout_ms = 30 s), audio resumes both
// ways, measured by content from the moment of restoration, and the door's
// log tells the story (media state changes with elapsed_ms).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canUseNetns, sleep, waitFor } from './lib/util.mjs';
import { daemonSkipReason, logTime } from './lib/daemon.mjs';
import { withRig, natRigSkipReason } from './lib/natrig.mjs';
import { bringUpNatCall, callWithAudio, turnServers, DOOR_TONE, MIC_TONE } from './lib/natcall.mjs';
import { intercomSnapshot } from './lib/answerer.mjs';
import { wavTailDominant } from './lib/wav.mjs';
import { TOL_HZ } from './lib/checks.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : (daemonSkipReason() || natRigSkipReason());
const OUTAGE_MS = 10000;
const RESUME_LIMIT_MS = 2000;

/** Milliseconds from now until `probe()` is true on two reads in a row (bounded). */
async function timeUntil(probe, what, timeout = 15000) {
  const t0 = Date.now();
  let streak = 0;
  let firstHit = null;
  await waitFor(async () => {
    if (await probe()) {
      if (streak === 0) firstHit = Date.now();
      streak += 1;
    } else {
      streak = 0;
    }
    return streak >= 2;
  }, { timeout, interval: 100, message: what });
  return firstHit - t0;
}

test('door uplink cut for 10 s mid-call: the call survives and audio resumes within 2 s', { skip, timeout: 120000 }, async () => {
  await withRig({}, async (rig) => {
    await rig.startTurn();
    const s = await bringUpNatCall(rig, { servers: turnServers(rig, ['stun']), receivingTimeoutMs: 30000 });
    const { callId } = await callWithAudio(s);
    const pageHz = () => s.page.page.evaluate(() => window.intercom.remoteDominantHz());
    const near = (hz, f) => hz !== null && Math.abs(hz - f) <= TOL_HZ;
    // The door's speaker over the last 0.3 s: short, so the tone's return is seen promptly.
    // A speaker file that stops growing counts as silence too.
    let lastTotal = -1;
    const doorHz = () => {
      try {
        const r = wavTailDominant(s.recordFile, 0.3);
        const grew = r.totalSeconds > lastTotal;
        lastTotal = r.totalSeconds;
        return grew ? r.hz : null;
      } catch { return null; }
    };

    const fromLine = s.door.lines.length;
    const cutAt = Date.now();
    await rig.doorUplink(false);
    // The outage is real: within a few seconds neither side hears the other.
    const silentPage = await timeUntil(async () => !near(await pageHz(), DOOR_TONE), 'the page to lose the door tone', 8000);
    const silentDoor = await timeUntil(async () => !near(doorHz(), MIC_TONE), 'the door to lose the page tone', 8000);
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - cutAt)));
    const during = await s.control.state();
    assert.equal(during.call.state, 'in_call', `the door keeps the call during the outage: ${JSON.stringify(during.call)}`);
    assert.equal((await intercomSnapshot(s.page.page)).state, 'in_call', 'the page keeps the call during the outage');

    await rig.doorUplink(true);
    const restoredAt = Date.now();
    const [pageResume, doorResume] = await Promise.all([
      timeUntil(async () => near(await pageHz(), DOOR_TONE), 'the page to hear the door again'),
      timeUntil(async () => near(doorHz(), MIC_TONE), 'the door to hear the page again'),
    ]);
    const story = s.door.lines.slice(fromLine).filter((l) => !/DEBUG|TRACE/.test(l)).slice(0, 40);
    const after = await s.control.state();
    process.stderr.write(`outage: cut ${OUTAGE_MS} ms; silence seen after page ${silentPage} ms, door ${silentDoor} ms; `
      + `resumed after restoration: page hears door ${pageResume} ms, door hears page ${doorResume} ms\n`
      + `door log during and after the outage (times relative to the cut):\n${story.map((l) => {
        const t = logTime(l);
        return `  +${t ? Math.round(t - cutAt) : '?'} ms ${l.replace(/^\S+\s+/, '')}`;
      }).join('\n')}\n`);
    assert.equal(after.call.state, 'in_call', 'the call survived');
    assert.equal(after.call.call_id, callId, 'the same call');
    assert.ok(pageResume <= RESUME_LIMIT_MS, `page audio resumed ${pageResume} ms after restoration (limit ${RESUME_LIMIT_MS})`);
    assert.ok(doorResume <= RESUME_LIMIT_MS, `door audio resumed ${doorResume} ms after restoration (limit ${RESUME_LIMIT_MS})`);
    assert.ok(Date.now() - restoredAt < 20000);
    await s.control.hangup();
    await s.control.waitForNoCall(10000);
  });
});
