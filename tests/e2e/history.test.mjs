// Call history on the answering page with the hub's real records: a missed
// call (nobody answers within the ring timeout), an answered call with the
// door opened and a declined call are listed newest first with their times
// and outcomes, again after the daemon restarts on the same state
// directory; an answerer of another group sees none of them; the app badge
// counts the missed call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone, startDaemon, waitForHttp } from './lib/daemon.mjs';
import { waitForConnection, waitForState, pageEvents } from './lib/answerer.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const RING_TIMEOUT_MS = 4000;

function hhmm(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

// The list as drawn, and the page's own view of it.
function listed(p) {
  return p.page.evaluate(() => ({
    items: [...document.querySelectorAll('#history-list li')].map((li) => ({
      id: li.dataset.callId,
      cls: li.className,
      door: li.querySelector('.history-door').textContent,
      outcome: li.querySelector('.history-outcome').textContent,
      time: li.querySelector('time').textContent,
      dateTime: li.querySelector('time').dateTime,
    })),
    hidden: document.getElementById('history').hidden,
    emptyShown: !document.getElementById('history-empty').hidden,
    calls: window.intercom.history,
  }));
}

async function waitForHistory(p, n, what) {
  return waitFor(async () => {
    const l = await listed(p);
    return l.items.length === n ? l : null;
  }, { timeout: 10000, interval: 100, message: `${p.label}: ${what}` });
}

test('history: missed, answered (door opened) and declined calls, newest first, across a restart, per group, with the badge', { skip, timeout: 90000 }, async () => {
  await withEnv('history', async (env) => {
    const setup = standaloneSetup(env, {
      ringTimeoutMs: RING_TIMEOUT_MS,
      hubHost: '127.0.0.1',
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A', groups: ['residents'] },
        { id: 'flat-9z', name: 'Caretaker', groups: ['staff'] },
      ],
    });
    const { daemon, control, sockets } = await bringUpStandalone(env, setup);
    const [tokA, tokZ] = setup.answerers;
    const browser = await env.browser({});
    // The app badge, spied on before the page's script runs.
    await browser.addInitScript(() => {
      window.__badge = [];
      navigator.setAppBadge = (n) => { window.__badge.push(n); return Promise.resolve(); };
      navigator.clearAppBadge = () => { window.__badge.push(0); return Promise.resolve(); };
    });
    const a = await env.page(browser, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-1a');
    // The caretaker on a phone of its own (a profile of its own: the page
    // keeps its sign-in in the origin's storage).
    const zBrowser = await env.browser({ name: 'caretaker' });
    const z = await env.page(zBrowser, `${setup.origin}/?raw=1#token=${tokZ.token}`, 'caretaker');
    await waitForConnection(a);
    await waitForConnection(z);
    const t0 = Date.now();

    // ---- Missed: nobody answers within the ring timeout.
    await control.press();
    const missed = await waitForState(a, 'ringing', 10000);
    await waitForState(a, 'idle', RING_TIMEOUT_MS + 5000);
    await control.waitForNoCall(5000);
    const afterMissed = await waitForHistory(a, 1, 'the missed call listed');
    assert.equal(afterMissed.items[0].outcome, 'Missed');
    // The badge counted it (the list, once on screen a moment, counts as seen).
    await waitFor(() => a.page.evaluate(() => window.__badge.includes(1)),
      { timeout: 5000, message: 'the badge to count the missed call' });

    // ---- Answered, the door opened from the page.
    await control.press();
    const answered = await waitForState(a, 'ringing', 10000);
    await a.page.getByRole('button', { name: 'Accept the call' }).click();
    await waitForState(a, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    const openButton = a.page.getByRole('button', { name: 'Open the door' });
    await waitFor(() => openButton.isEnabled(), { timeout: 10000, message: 'Open door enabled (data channel open)' });
    await openButton.click();
    await waitFor(async () => (await control.state()).relay_energised, { timeout: 5000, interval: 50, message: 'the relay to open' });
    await a.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(a, 'idle', 5000);
    await control.waitForNoCall(10000);
    await waitForHistory(a, 2, 'the answered call listed');

    // ---- Declined.
    await control.press();
    const declined = await waitForState(a, 'ringing', 10000);
    await a.page.getByRole('button', { name: 'Decline the call' }).click();
    await waitForState(a, 'idle', 5000);
    await control.waitForNoCall(10000);
    const t1 = Date.now();

    const expectList = async (p, when) => {
      const l = await waitFor(async () => {
        const v = await listed(p);
        return v.items.length === 3 && v.items[0].outcome === 'Declined' ? v : null;
      }, { timeout: 10000, interval: 100, message: `${p.label}: three calls listed ${when}` });
      assert.equal(l.hidden, false);
      assert.deepEqual(l.items.map((i) => i.id), [declined.callId, answered.callId, missed.callId], `newest first ${when}`);
      const [dec, ans, mis] = l.items;
      assert.equal(dec.outcome, 'Declined');
      assert.match(ans.outcome, /^Answered by Flat 1A · \d+:\d\dDoor opened$/, `answered ${when}`);
      assert.equal(mis.outcome, 'Missed');
      assert.match(mis.cls, /history-missed/);
      for (const i of l.items) {
        assert.equal(i.door, 'Front door');
        const at = Date.parse(i.dateTime);
        assert.ok(at >= t0 - 2000 && at <= t1 + 2000, `${i.id} at ${i.dateTime}, between the test's start and end`);
        assert.equal(i.time, hhmm(at), `${i.id}: shown time`);
      }
      const byId = Object.fromEntries(l.calls.map((c) => [c.call_id, c]));
      assert.equal(byId[answered.callId].door_opened, true);
      assert.deepEqual(byId[answered.callId].answered_by, { id: 'flat-1a', name: 'Flat 1A' });
      assert.equal(byId[missed.callId].door_opened, false);
      assert.equal(byId[declined.callId].outcome, 'declined');
      return l;
    };
    const before = await expectList(a, 'before the restart');
    const badge = await a.page.evaluate(() => window.__badge);
    assert.ok(badge.indexOf(1) >= 0 && badge.every((n) => n === 0 || n === 1), `badge: ${JSON.stringify(badge)}`);

    // The other group's answerer: nothing of it, though connected throughout.
    const other = await listed(z);
    assert.deepEqual(other.items, [], 'the caretaker lists no call of the residents');
    assert.equal(other.emptyShown, true);
    const zHistories = await pageEvents(z, { kind: 'rx', type: 'history' });
    assert.ok(zHistories.length >= 1, 'the caretaker asked for its history');

    // ---- Restart on the same state directory; the page reloaded.
    await env.ns.kill(daemon, { graceMs: 5000 });
    const daemon2 = startDaemon(env, setup.configFile, { label: 'intercomd-2' });
    await waitForHttp(sockets.hub, '/', daemon2, 'the restarted hub');
    await a.page.reload();
    await waitForConnection(a);
    const after = await expectList(a, 'after the restart');
    assert.deepEqual(after.items.map((i) => [i.id, i.outcome, i.time]), before.items.map((i) => [i.id, i.outcome, i.time]));
    await z.page.reload();
    await waitForConnection(z);
    await waitFor(async () => (await pageEvents(z, { kind: 'rx', type: 'history' })).length >= 1,
      { timeout: 5000, message: 'the caretaker\'s history after the restart' });
    assert.deepEqual((await listed(z)).items, [], 'still nothing for the other group');
    console.log(`history: ${after.items.map((i) => `${i.time} ${i.outcome}`).join(' | ')}; badge ${JSON.stringify(badge)}`);
  });
});
