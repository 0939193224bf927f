// Quiet hours: a flat in its quiet hours is neither rung on its open page
// nor pushed on its phone (the test push service on the namespace's
// loopback); the other flat rings and answers; the quiet flat's history
// marks the call as one it was not rung for. With both flats quiet, a
// press ends at the door with nobody to ring, a missed call in both
// histories.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, sleep, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone, startDaemon, waitForHttp, waitForLog, logField } from './lib/daemon.mjs';
import { waitForConnection, waitForState, intercomSnapshot, pageEvents } from './lib/answerer.mjs';
import { PushService, pushServiceSkipReason, subscribeRaw } from './lib/push_service.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : (daemonSkipReason() || pushServiceSkipReason());
const ALWAYS = ['daily 00:00-24:00'];

/** The page's history list: { callId: outcome text }. */
function historyShown(p) {
  return p.page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#history-list li')]
    .map((li) => [li.getAttribute('data-call-id'), li.querySelector('.history-outcome').textContent])));
}

async function waitHistory(p, callId, timeout = 10000) {
  let last;
  try {
    return await waitFor(async () => {
      last = await historyShown(p);
      return last[callId] ? last : null;
    }, { timeout, interval: 100, message: `${p.label}: call ${callId} in the history list` });
  } catch (err) {
    err.message += `; list: ${JSON.stringify(last)}`;
    throw err;
  }
}

test('quiet hours: the quiet flat is neither rung nor pushed and sees the call in its history; all quiet ends the press', { skip, timeout: 90000 }, async () => {
  await withEnv('quiet_hours', async (env) => {
    const svc = await PushService.start(env);
    const answerers = [
      { id: 'flat-a', name: 'Flat A', groups: ['residents'], quietHours: ALWAYS },
      { id: 'flat-b', name: 'Flat B', groups: ['residents'] },
    ];
    const push = { subject: 'mailto:quiet-hours@test.invalid' };
    const setup = standaloneSetup(env, { answerers, push });
    let { daemon, control, sockets } = await bringUpStandalone(env, setup);
    const [tokA, tokB] = setup.answerers;

    // Both flats' phones subscribe (B's is the proof that pushes flow).
    await subscribeRaw(sockets.hub, setup.origin, tokA.token, svc.subscription('flat-a'));
    await subscribeRaw(sockets.hub, setup.origin, tokB.token, svc.subscription('flat-b'));

    const browser = await env.browser({ micHz: 1000, secureOrigins: [setup.origin] });
    const a = await env.page(browser, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-a');
    const b = await env.page(browser, `${setup.origin}/?raw=1#token=${tokB.token}`, 'flat-b');
    await waitForConnection(a);
    await waitForConnection(b);

    // ---- A quiet, B not: B rings, A's page and phone stay silent.
    const from = daemon.lines.length;
    await control.press();
    const rb = await waitForState(b, 'ringing', 10000);
    const callId = rb.callId;
    await waitFor(() => svc.recordsFor('flat-b').find((r) => r.json?.call_id === callId),
      { timeout: 10000, message: 'the ring push for B' });
    const ringing = await waitForLog(daemon, /rings group/, { from });
    assert.match(ringing.line, /1 online, 0 by push only, 1 in quiet hours/, ringing.line);
    await b.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(b, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    // Anything misrouted to A would have arrived by now.
    await sleep(500);
    const snapA = await intercomSnapshot(a.page);
    assert.equal(snapA.state, 'idle', 'the quiet flat\'s page stays idle');
    assert.deepEqual(await pageEvents(a, { kind: 'rx', type: 'ring' }), [], 'no ring reached the quiet flat');
    assert.deepEqual(svc.recordsFor('flat-a'), [], 'no push for the quiet flat');
    const pushedB = svc.recordsFor('flat-b');
    assert.equal(pushedB[0].vapid.ok, true, JSON.stringify(pushedB[0]));
    assert.deepEqual(pushedB[0].json.door, { id: 'door-1', name: 'Front door' });

    await b.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(b, 'idle', 5000);
    await control.waitForNoCall(10000);

    // A's history: the call, with A marked as not rung for quiet hours.
    // The call itself was answered (by B), so its outcome says so.
    const listA = await waitHistory(a, callId);
    const entryA = (await a.page.evaluate(() => window.intercom.history)).find((c) => c.call_id === callId);
    assert.equal(entryA.quiet_hours, true, JSON.stringify(entryA));
    assert.equal(entryA.outcome, 'answered');
    assert.equal(entryA.answered_by?.id, 'flat-b');
    // For A, asleep, it is a missed call, whoever answered it.
    assert.equal(listA[callId], 'Missed (quiet hours) · answered by Flat B');
    const entryB = await waitFor(async () => (await b.page.evaluate(() => window.intercom.history || [])).find((c) => c.call_id === callId),
      { timeout: 5000, message: 'B\'s history entry' });
    assert.equal(entryB.quiet_hours, false);

    // ---- Both quiet: the door's press finds nobody to ring.
    await env.ns.kill(daemon);
    const both = standaloneSetup(env, { answerers: answerers.map((x) => ({ ...x, quietHours: ALWAYS })), push });
    // Same tokens as before: rewrite the token files standaloneSetup made anew.
    for (const [old, now] of [[tokA, both.answerers[0]], [tokB, both.answerers[1]]]) {
      fs.writeFileSync(now.file, `${old.token}\n`, { mode: 0o600 });
    }
    daemon = startDaemon(env, both.configFile, { label: 'intercomd-quiet' });
    await waitForHttp(sockets.control, '/state', daemon, 'the control API after the restart');
    await waitForHttp(sockets.hub, '/', daemon, 'the hub after the restart');
    await waitForConnection(a, 20000);
    await waitForConnection(b, 20000);
    // The station's own signaling connection to its hub.
    await waitForLog(daemon, /hub: door door-1 authenticated/, { timeout: 15000 });
    const pushesBefore = svc.records().length;

    const from2 = daemon.lines.length;
    await control.press();
    const ended = await waitForLog(daemon, /call ended/, { from: from2, timeout: 10000 });
    assert.match(ended.line, /no answerer online/, ended.line);
    const quietCall = logField(ended.line, 'call_id');
    assert.ok(quietCall, ended.line);
    const ringing2 = daemon.lines.slice(from2).find((l) => /rings group/.test(l));
    assert.match(ringing2, /0 online, 0 by push only, 2 in quiet hours/, ringing2);
    await control.waitForNoCall(5000);
    for (const p of [a, b]) {
      const list = await waitHistory(p, quietCall);
      assert.equal(list[quietCall], 'Missed (quiet hours)', `${p.label}: ${JSON.stringify(list)}`);
      assert.ok(list[callId], `${p.label}: the earlier call is still listed after the restart`);
      assert.equal((await intercomSnapshot(p.page)).state, 'idle');
      assert.deepEqual((await pageEvents(p, { kind: 'rx', type: 'ring' })).filter((m) => m.call_id === quietCall), []);
    }
    await sleep(300);
    assert.equal(svc.records().length, pushesBefore, 'nobody is pushed while everybody is quiet');
    assert.equal(daemon.exitInfo, null);
    console.log(`quiet_hours: call ${callId}: A ${JSON.stringify(listA[callId])}; all quiet: ${quietCall} ${ended.line.replace(/^\S+\s+/, '')}`);
  });
});
