// Web Push on the browser side with the hub's real payload: the station
// pushes its ring to the test push service (tests/push/push_service.py,
// which checks the VAPID token and decrypts with http_ece), the test hands
// that exact plaintext to flat A's service worker through DevTools
// (ServiceWorker.deliverPushMessage), and the worker shows the ringing
// notification. Answer from it opens the app, which gets the call's ring
// replayed after welcome and answers: audio both ways by content. A call
// answered by another flat closes the notification through its `end` push.
//
// Headless Chromium in a namespace has no push service of its own, so A's
// page never holds a real PushSubscription: the test registers A's
// subscription with the hub itself, over a raw WebSocket with A's token,
// pointing at the test push service. The page is served on the namespace's
// loopback (a secure context for service workers without any switch).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, pageEvents } from './lib/answerer.mjs';
import { RawClient } from './lib/rawclient.mjs';
import { PushService, pushServiceSkipReason } from './lib/push.mjs';
import { swRegistrationId, swNotifications, openWindowFromWorker, swTrackPushes, swPushHandled } from './lib/sw.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason() || pushServiceSkipReason();

const DOOR_TONE = 600;

// The Topic header of a call's pushes (docs/signaling.md).
function topicOf(callId) {
  if (callId.length <= 32) return callId;
  return crypto.createHash('sha256').update(callId).digest('base64url').slice(0, 32);
}

function checkPush(push, { kind, ttl }) {
  const r = push.record;
  assert.equal(r.vapid.ok, true, `VAPID: ${r.vapid.error}`);
  assert.equal(r.content_encoding, 'aes128gcm');
  assert.equal(r.urgency, 'high');
  assert.equal(r.ttl, ttl, `${kind} TTL`);
  assert.equal(r.topic, topicOf(push.payload.call_id), `${kind} Topic`);
}

test('push page: the hub\'s ring push shows the notification, Answer opens the app and connects; end closes it', { skip, timeout: 90000 }, async () => {
  await withEnv('push_page', async (env) => {
    const setup = standaloneSetup(env, {
      tone: DOOR_TONE,
      hubHost: '127.0.0.1',
      push: ['enabled = true'],
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A', groups: ['residents'] },
        { id: 'flat-1b', name: 'Flat 1B', groups: ['residents'] },
      ],
    });
    const push = await PushService.start(env);
    const { control, sockets } = await bringUpStandalone(env, setup);
    const [tokA, tokB] = setup.answerers;
    const browser = await env.browser({});
    await browser.grantPermissions(['notifications'], { origin: setup.origin });
    // DevTools through a blank tab of the same profile: it stays when A's page closes.
    const blank = browser.pages()[0] || await browser.newPage();
    const cdp = await browser.newCDPSession(blank);

    // ---- Flat A's page, once: the worker installed, then closed.
    const a = await env.page(browser, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-1a');
    await waitForConnection(a);
    await a.page.evaluate(() => navigator.serviceWorker.ready);
    const welcome = (await pageEvents(a, { kind: 'rx', type: 'welcome' })).at(-1);
    const vapidKey = welcome.push && welcome.push.vapid_public_key;
    assert.match(vapidKey || '', /^[A-Za-z0-9_-]{87}$/, 'welcome offers push with a P-256 key');
    const registrationId = await swRegistrationId(cdp, `${setup.origin}/`);
    const deliver = async (plaintext) => {
      const t = Date.now();
      await cdp.send('ServiceWorker.deliverPushMessage', { origin: setup.origin, registrationId, data: plaintext });
      return t;
    };

    // A's subscription, pointing at the test push service.
    const raw = await RawClient.connect(sockets.hub, `ws://${setup.hubAddr}/ws`, 'flat-1a raw');
    assert.equal((await raw.hello('answerer', tokA.token)).type, 'welcome');
    const from = raw.messages.length;
    raw.send({ type: 'push_subscribe', subscription: push.subscription('flat-1a') });
    await raw.next((m) => m.type === 'push_subscribed' || m.type === 'error', { from, what: 'push_subscribed' })
      .then((m) => assert.equal(m.type, 'push_subscribed', JSON.stringify(m)));
    raw.close();
    await a.page.close();
    // The worker outlives the page for a while (Chromium stops it when idle).
    await swTrackPushes(browser, setup.origin);

    // ---- Press: the ring push, decrypted by the push service.
    await control.press();
    const ring = await push.next((p) => p.kind === 'ring', { what: 'the ring push' });
    const callId = ring.payload.call_id;
    assert.deepEqual(Object.keys(ring.payload).sort(), ['at_ms', 'call_id', 'door', 'kind']);
    assert.deepEqual(ring.payload.door, { id: 'door-1', name: 'Front door' });
    assert.ok(Math.abs(ring.payload.at_ms - Date.now()) < 60000, `at_ms ${ring.payload.at_ms}`);
    assert.equal(ring.record.vapid.k, vapidKey, 'signed with the key in welcome');
    checkPush(ring, { kind: 'ring', ttl: '30' });
    assert.equal((await control.state()).call.state, 'ringing');

    // Delivered to A's worker exactly as decrypted.
    await deliver(ring.record.plaintext);
    await swPushHandled(browser, setup.origin, 'ring', callId);
    const shown = await swNotifications(browser, setup.origin, callId);
    assert.equal(shown.length, 1, JSON.stringify(shown));
    assert.equal(shown[0].title, 'Front door', 'titled with the door\'s name');
    assert.equal(shown[0].tag, callId);
    assert.match(shown[0].body, /^Ringing at \d\d:\d\d$/);
    assert.deepEqual(shown[0].actions, [{ action: 'answer', title: 'Answer' }, { action: 'decline', title: 'Decline' }]);
    assert.deepEqual(shown[0].data, { call_id: callId, door: { id: 'door-1', name: 'Front door' } });

    // ---- Answer from the notification: the app opens at /#answer=<id>.
    const opening = browser.waitForEvent('page', { timeout: 15000 });
    const opened = await openWindowFromWorker(browser, setup.origin, 'answer', callId);
    assert.equal(opened.url, `/#answer=${callId}`);
    const appPage = await opening;
    const app = { page: appPage, console: [], label: 'flat-1a app' };
    appPage.on('console', (m) => app.console.push(`[${app.label}] ${m.type()}: ${m.text()}`));
    env.pages.push(app);
    await waitFor(() => appPage.url().startsWith(`${setup.origin}/`), { timeout: 10000, message: 'the app window to load' });
    await waitForConnection(app);
    assert.equal((await swNotifications(browser, setup.origin, callId)).length, 0, 'the clicked notification is closed');
    // The ring replayed right after welcome; the page answers it.
    const rx = await pageEvents(app, { kind: 'rx' });
    const iWelcome = rx.findIndex((e) => e.type === 'welcome');
    const iRing = rx.findIndex((e) => e.type === 'ring' && e.call_id === callId);
    assert.ok(iWelcome >= 0 && iRing > iWelcome, `ring after welcome: ${JSON.stringify(rx.map((e) => e.type))}`);
    await waitForState(app, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    await expectRemoteTone(app, DOOR_TONE, { timeout: 15000 });
    assert.deepEqual((await pageEvents(app, { kind: 'call-action-run' })).map((e) => [e.action, e.call_id]), [['answer', callId]]);
    assert.equal((await pageEvents(app, { kind: 'tx', type: 'accept' })).at(-1).call_id, callId);
    assert.equal(app.page.url(), `${setup.origin}/`, 'the call id left the address');
    await app.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(app, 'idle', 5000);
    await control.waitForNoCall(10000);
    await app.page.close();

    // ---- A later call answered by flat B: the `end` push closes A's notification.
    const b = await env.page(browser, `${setup.origin}/?raw=1#token=${tokB.token}`, 'flat-1b');
    await waitForConnection(b);
    await control.press();
    const ring2 = await push.next((p) => p.kind === 'ring' && p.call_id !== callId, { what: 'the second ring push' });
    const callId2 = ring2.payload.call_id;
    await waitForState(b, 'ringing', 10000);
    await swTrackPushes(browser, setup.origin);
    await deliver(ring2.record.plaintext);
    await swPushHandled(browser, setup.origin, 'ring', callId2);
    assert.equal((await swNotifications(browser, setup.origin, callId2)).length, 1, 'the second ring notification');
    await b.page.getByRole('button', { name: 'Accept the call' }).click();
    const end = await push.next((p) => p.kind === 'end' && p.call_id === callId2, { what: 'the end push' });
    assert.deepEqual(end.payload, { kind: 'end', call_id: callId2, reason: 'taken' });
    checkPush(end, { kind: 'end', ttl: '60' });
    await deliver(end.record.plaintext);
    await swPushHandled(browser, setup.origin, 'end', callId2);
    assert.equal((await swNotifications(browser, setup.origin, callId2)).length, 0, 'the end push closed the notification');
    await waitForState(b, 'in_call', 20000);
    await b.page.getByRole('button', { name: 'Hang up' }).click();
    await control.waitForNoCall(10000);
    console.log(`push_page: ring push for ${callId} shown as "${shown[0].title}" (${opened.how}); end (${end.payload.reason}) closed ${callId2}`);
    await cdp.detach();
  });
});
