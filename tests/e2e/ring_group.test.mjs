// A ring group: two flats in the same group both ring; the first to accept
// gets the call, the other is told it was taken and never opens media.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, sleep, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, intercomSnapshot, pageEvents } from './lib/answerer.mjs';
import { expectDoorHears } from './lib/checks.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

test('ring group: both flats ring, first accept wins, the other sees "taken"', { skip, timeout: 180000 }, async () => {
  await withEnv('ring_group', async (env) => {
    const setup = standaloneSetup(env, {
      tone: 600,
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A', groups: ['residents'] },
        { id: 'flat-1b', name: 'Flat 1B', groups: ['residents'] },
      ],
    });
    const { daemon, control } = await bringUpStandalone(env, setup);
    const browser = await env.browser({ micHz: 1000, secureOrigins: [setup.origin] });
    const [tokA, tokB] = setup.answerers;
    const a = await env.page(browser, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-1a');
    const b = await env.page(browser, `${setup.origin}/?raw=1#token=${tokB.token}`, 'flat-1b');
    await waitForConnection(a);
    await waitForConnection(b);

    await control.press();
    const ra = await waitForState(a, 'ringing', 10000);
    const rb = await waitForState(b, 'ringing', 10000);
    assert.equal(ra.callId, rb.callId, 'both flats ring for the same call');
    assert.equal(ra.doorNameShown, 'Front door');
    assert.equal(rb.doorNameShown, 'Front door');

    await a.page.getByRole('button', { name: 'Accept the call' }).click();
    const taken = await waitForState(b, 'idle', 10000);
    assert.equal(taken.message, 'Answered by Flat 1A', 'the other flat is told who answered');
    const takenMsgs = await pageEvents(b, { kind: 'rx', type: 'taken' });
    assert.equal(takenMsgs.length, 1);
    assert.equal(takenMsgs[0].call_id, ra.callId);

    await waitForState(a, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    await expectRemoteTone(a, 600, { timeout: 15000 });
    await expectDoorHears(setup.recordFile, 1000, { timeout: 15000 });

    // Give any misrouted media messages time to arrive before checking B.
    await sleep(1000);
    const snapB = await intercomSnapshot(b.page);
    assert.equal(snapB.peerConnections, 0, 'the flat that did not answer created no peer connection');
    assert.equal(snapB.micRequests, 0, 'the flat that did not answer never opened its microphone');
    const mediaToB = (await pageEvents(b, { kind: 'rx' })).filter((e) => ['offer', 'answer', 'candidate', 'accepted'].includes(e.type));
    assert.deepEqual(mediaToB, [], 'no media signaling reached the flat that did not answer');
    const ignored = await pageEvents(b, { kind: 'ignored-offer' });
    assert.deepEqual(ignored, []);

    // A late accept from B is answered with "taken" (first accept wins).
    await b.page.evaluate((cid) => window.intercom.send({ type: 'accept', call_id: cid }), ra.callId);
    await sleep(500);
    const lateReplies = (await pageEvents(b, { kind: 'rx' })).filter((e) => e.call_id === ra.callId && e.type !== 'ring');
    assert.ok(lateReplies.length >= 2 && lateReplies.at(-1).type === 'taken',
      `a late accept gets "taken": ${JSON.stringify(lateReplies)}`);
    const stillTalking = await control.state();
    assert.equal(stillTalking.call.state, 'in_call', 'a late accept does not disturb the call');

    await a.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(a, 'idle', 5000);
    await control.waitForNoCall(10000);
    assert.equal(daemon.exitInfo, null);
  });
});

// The newest call in a page's history list: { id, outcome }.
function newestListed(p) {
  return p.page.evaluate(() => {
    const li = document.querySelector('#history-list li');
    return li ? { id: li.dataset.callId, outcome: li.querySelector('.history-outcome').textContent } : null;
  });
}

async function expectListed(p, callId, outcome) {
  return waitFor(async () => {
    const n = await newestListed(p);
    return n && n.id === callId && n.outcome === outcome ? n : null;
  }, { timeout: 5000, interval: 100, message: `${p.label}: call ${callId} listed as "${outcome}"` });
}

test('ring group: everyone declines, or nobody answers in time (listed "Missed")', { skip, timeout: 120000 }, async () => {
  await withEnv('ring_group_unanswered', async (env) => {
    const RING_TIMEOUT_MS = 4000;
    const setup = standaloneSetup(env, {
      ringTimeoutMs: RING_TIMEOUT_MS,
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A', groups: ['residents'] },
        { id: 'flat-1b', name: 'Flat 1B', groups: ['residents'] },
      ],
    });
    const { daemon, control } = await bringUpStandalone(env, setup);
    const browser = await env.browser({ micHz: 1000, secureOrigins: [setup.origin] });
    const [tokA, tokB] = setup.answerers;
    const a = await env.page(browser, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-1a');
    const b = await env.page(browser, `${setup.origin}/?raw=1#token=${tokB.token}`, 'flat-1b');
    await waitForConnection(a);
    await waitForConnection(b);

    // Both decline: the door ends the call.
    await control.press();
    const rd = await waitForState(a, 'ringing', 10000);
    await waitForState(b, 'ringing', 10000);
    await a.page.getByRole('button', { name: 'Decline the call' }).click();
    assert.equal((await waitForState(a, 'idle', 2000)).message, 'Declined');
    assert.equal((await control.state()).call.state, 'ringing', 'one decline of two leaves the door ringing');
    await b.page.getByRole('button', { name: 'Decline the call' }).click();
    await waitForState(b, 'idle', 2000);
    await control.waitForNoCall(5000);
    await expectListed(a, rd.callId, 'Declined');
    await expectListed(b, rd.callId, 'Declined');

    // Nobody answers: after the ring timeout both pages list a missed call.
    const t0 = Date.now();
    await control.press();
    const ra = await waitForState(a, 'ringing', 10000);
    await waitForState(b, 'ringing', 10000);
    const missedA = await waitForState(a, 'idle', RING_TIMEOUT_MS + 5000);
    const missedB = await waitForState(b, 'idle', 3000);
    const elapsed = Date.now() - t0;
    assert.equal(missedA.callId, null);
    assert.equal(missedB.callId, null);
    await expectListed(a, ra.callId, 'Missed');
    await expectListed(b, ra.callId, 'Missed');
    assert.ok(elapsed >= RING_TIMEOUT_MS - 200, `the call rang for ${elapsed} ms, ring timeout is ${RING_TIMEOUT_MS} ms`);
    const cancels = await pageEvents(a, { kind: 'rx', type: 'cancel' });
    assert.equal(cancels.at(-1)?.call_id, ra.callId);
    assert.equal(cancels.at(-1)?.reason, 'timeout');
    await control.waitForNoCall(5000);
    assert.equal((await intercomSnapshot(a.page)).micRequests, 0, 'no microphone opened for unanswered calls');
    assert.equal(daemon.exitInfo, null);
  });
});
