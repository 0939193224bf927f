// The answering page as an installable app: manifest and service worker
// (installable, the shell offline, nothing secret cached), ringing
// notifications from a push message with Answer/Decline that reach the page
// and connect a real call, and the call history with the missed-call badge.
// The page is served on the namespace's loopback (http://127.0.0.1 is a
// secure context without any browser switch).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, waitFor, sleep } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, intercomSnapshot, pageEvents } from './lib/answerer.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const DOOR_TONE = 600;
// An uncompressed P-256 point (65 bytes, base64url): only its shape matters here.
const VAPID_KEY = 'BEl62iUYgUivxIkv69yViEuiBIa-Ib9-SkvMeAtA3LFgDzkrxZJjSgSnfckjBJuBkr3qBUYIHBQFLXYp5Nksh8U';

async function up(env, { withToken = true } = {}) {
  const setup = standaloneSetup(env, { tone: DOOR_TONE, hubHost: '127.0.0.1' });
  const { daemon, control } = await bringUpStandalone(env, setup);
  const browser = await env.browser({});
  const token = setup.answerers[0].token;
  const flat = await env.page(browser, `${setup.origin}/?raw=1${withToken ? `#token=${token}` : ''}`, 'flat-1a');
  await waitForConnection(flat);
  return { setup, daemon, control, browser, flat, token };
}

function swReady(p) {
  return p.page.evaluate(async () => {
    const reg = await navigator.serviceWorker.ready;
    return { active: !!reg.active, state: reg.active && reg.active.state, scope: reg.scope, scriptURL: reg.active && reg.active.scriptURL };
  });
}

// The page's service worker registration id, from DevTools' ServiceWorker domain.
async function swRegistration(cdp, scope) {
  const regs = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (ev) => regs.push(...ev.registrations));
  await cdp.send('ServiceWorker.enable');
  const reg = await waitFor(() => regs.find((r) => r.scopeURL === scope && !r.isDeleted),
    { timeout: 5000, message: `the service worker registration for ${scope}` });
  return reg.registrationId;
}

function notifications(p, tag) {
  return p.page.evaluate(async (t) => {
    const reg = await navigator.serviceWorker.ready;
    const list = await reg.getNotifications(t ? { tag: t } : undefined);
    return list.map((n) => ({ title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction,
      renotify: n.renotify, actions: n.actions.map((a) => ({ action: a.action, title: a.title })), data: n.data, vibrate: Array.from(n.vibrate || []) }));
  }, tag || null);
}

function hhmm(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

test('installable app: no installability errors, worker active, the shell offline, nothing secret cached', { skip, timeout: 120000 }, async () => {
  await withEnv('pwa_install', async (env) => {
    const { setup, browser, flat, token, daemon } = await up(env);

    const sw = await swReady(flat);
    assert.equal(sw.active, true, 'navigator.serviceWorker.ready has an active worker');
    assert.equal(sw.scope, `${setup.origin}/`);
    assert.equal(sw.scriptURL, `${setup.origin}/sw.js`);

    const cdp = await browser.newCDPSession(flat.page);
    const inst = await cdp.send('Page.getInstallabilityErrors');
    assert.deepEqual(inst.installabilityErrors, [], `installability errors: ${JSON.stringify(inst.installabilityErrors)}`);
    const man = await cdp.send('Page.getAppManifest');
    assert.deepEqual(man.errors, [], `manifest errors: ${JSON.stringify(man.errors)}`);
    const manifest = JSON.parse(man.data);
    assert.equal(manifest.name, 'Front door', 'named after station.name');
    assert.equal(manifest.display, 'standalone');
    const sizes = manifest.icons.map((i) => `${i.sizes}/${i.purpose}`);
    assert.deepEqual(sizes, ['192x192/any', '512x512/any', '512x512/maskable']);
    const files = await flat.page.evaluate(async () => {
      const out = {};
      for (const path of ['/favicon.ico', '/icons/icon-192.png', '/icons/apple-touch-icon.png', '/manifest.webmanifest']) {
        const r = await fetch(path, { cache: 'no-store' });
        out[path] = `${r.status} ${r.headers.get('content-type')}`;
      }
      return out;
    });
    assert.deepEqual(files, {
      '/favicon.ico': '200 image/x-icon',
      '/icons/icon-192.png': '200 image/png',
      '/icons/apple-touch-icon.png': '200 image/png',
      '/manifest.webmanifest': '200 application/manifest+json',
    });
    await cdp.detach();

    // The page controlled by the worker, then reloaded with the network off.
    await waitFor(() => flat.page.evaluate(() => !!navigator.serviceWorker.controller),
      { timeout: 5000, message: 'the page to be controlled by the worker' });
    await browser.setOffline(true);
    const resp = await flat.page.reload({ waitUntil: 'load' });
    assert.equal(resp.fromServiceWorker(), true, 'the reload was answered by the service worker');
    const offline = await waitFor(async () => {
      const s = await flat.page.evaluate(() => ({
        title: document.querySelector('h1')?.textContent,
        appRan: !!window.intercom,
        styled: getComputedStyle(document.querySelector('.panel')).borderRadius,
        conn: document.getElementById('conn-label').textContent,
        connection: window.intercom && window.intercom.connection,
      }));
      return s.appRan && /^Offline/.test(s.conn) ? s : null;
    }, { timeout: 10000, message: 'the offline shell saying "Offline"' });
    assert.equal(offline.title, 'Door intercom', 'cached HTML');
    assert.equal(offline.styled, '18px', 'cached CSS');
    assert.equal(offline.connection, 'offline', 'cached JS ran and could not connect');

    // What the cache holds: the shell only, no token, no /ws, no /client.json.
    const cached = await flat.page.evaluate(async () => {
      const out = [];
      for (const name of await caches.keys()) {
        const c = await caches.open(name);
        for (const req of await c.keys()) {
          const res = await c.match(req);
          out.push({ url: req.url, body: await res.text() });
        }
      }
      return out;
    });
    const paths = cached.map((e) => new URL(e.url).pathname + new URL(e.url).search).sort();
    for (const want of ['/', '/app.js', '/style.css', '/manifest.webmanifest', '/icons/icon-192.png']) {
      assert.ok(paths.includes(want), `cached ${want}: ${JSON.stringify(paths)}`);
    }
    for (const e of cached) {
      assert.equal(e.url.includes(token) || e.body.includes(token), false, `token in the cache: ${e.url}`);
      assert.equal(/\/ws$|\/client\.json|token/.test(e.url), false, `must not be cached: ${e.url}`);
      assert.equal(new URL(e.url).search, '', `cached with a query: ${e.url}`);
    }

    // Back online: signed in again from storage.
    await browser.setOffline(false);
    await flat.page.reload();
    await waitForConnection(flat);
    assert.equal(daemon.lines.some((l) => l.includes(token)), false, 'the daemon logged the token');
    console.log(`pwa: cached ${paths.length} entries: ${paths.join(' ')}`);
  });
});

test('push: ring notification with Answer/Decline, closed by end; Answer connects a real call, Decline ends one', { skip, timeout: 180000 }, async () => {
  await withEnv('pwa_push', async (env) => {
    const { setup, browser, flat, control } = await up(env);
    await browser.grantPermissions(['notifications'], { origin: setup.origin });
    const sw = await swReady(flat);
    const cdp = await browser.newCDPSession(flat.page);
    const registrationId = await swRegistration(cdp, sw.scope);
    const deliver = (payload) => cdp.send('ServiceWorker.deliverPushMessage',
      { origin: setup.origin, registrationId, data: JSON.stringify(payload) });

    // ---- A ring payload of the contract, then its end. Notifications are
    // read only once the worker has shown them: Chromium can drop one that
    // getNotifications() asks for while it is being shown.
    const sworker = await waitFor(() => browser.serviceWorkers().find((w) => w.url() === `${setup.origin}/sw.js`),
      { timeout: 5000, message: 'the worker in playwright' });
    await sworker.evaluate(() => {
      const real = self.intercomOnPush;
      self.__handled = [];
      self.intercomOnPush = (d) => real(d).then((v) => { self.__handled.push(`${d && d.kind}:${d && d.call_id}`); return v; });
    });
    const handled = (key) => waitFor(() => sworker.evaluate((k) => self.__handled.includes(k), key),
      { timeout: 10000, interval: 50, message: `the worker to handle ${key}` });
    const at = Date.now() - 3000;
    await deliver({ kind: 'ring', call_id: 'c-push-1', door: { id: 'door-1', name: 'Front door' }, at_ms: at });
    await handled('ring:c-push-1');
    const shown = await waitFor(async () => { const l = await notifications(flat); return l.length ? l : null; },
      { timeout: 10000, message: 'the ring notification' });
    assert.equal(shown.length, 1, JSON.stringify(shown));
    const n = shown[0];
    assert.equal(n.title, 'Front door');
    assert.equal(n.body, `Ringing at ${hhmm(at)}`);
    assert.equal(n.tag, 'c-push-1');
    assert.equal(n.requireInteraction, true);
    assert.equal(n.renotify, true);
    assert.deepEqual(n.actions, [{ action: 'answer', title: 'Answer' }, { action: 'decline', title: 'Decline' }]);
    assert.deepEqual(n.data, { call_id: 'c-push-1', door: { id: 'door-1', name: 'Front door' } });
    await deliver({ kind: 'end', call_id: 'c-push-1', reason: 'timeout' });
    await waitFor(async () => (await notifications(flat)).length === 0, { timeout: 10000, message: 'the end payload to close it' });

    // ---- A real call: the station rings the page; its push's Answer
    // action, clicked in the worker, answers in the open window.
    await control.press();
    const ringing = await waitForState(flat, 'ringing', 10000);
    const callId = ringing.callId;
    const worker = await waitFor(() => browser.serviceWorkers().find((w) => w.url() === `${setup.origin}/sw.js`),
      { timeout: 5000, message: 'the worker in playwright' });
    await worker.evaluate(() => {
      const real = self.intercomOnPush;
      self.__pushes = [];
      self.intercomOnPush = (d) => { self.__pushes.push(d); return real(d).then(() => self.__pushes.push('shown'), (e) => { self.__pushes.push(String(e)); throw e; }); };
    });
    await deliver({ kind: 'ring', call_id: callId, door: { id: 'door-1', name: 'Front door' }, at_ms: Date.now() });
    try {
      await waitFor(async () => (await notifications(flat, callId)).length === 1, { timeout: 10000, message: 'the notification of the real call' });
    } catch (err) {
      err.message += `; pushes seen by the worker: ${JSON.stringify(await worker.evaluate(() => self.__pushes).catch((e) => String(e)))}; all notifications: ${JSON.stringify(await notifications(flat))}`;
      throw err;
    }
    await worker.evaluate(async (id) => {
      const [note] = await self.registration.getNotifications({ tag: id });
      await self.intercomOnNotificationClick('answer', note);
    }, callId);
    await waitForState(flat, 'in_call', 20000);
    await control.waitForCallState('in_call', 10000);
    await expectRemoteTone(flat, DOOR_TONE, { timeout: 15000 });
    assert.deepEqual((await pageEvents(flat, { kind: 'call-action-run' })).map((e) => [e.action, e.call_id]), [['answer', callId]]);
    assert.equal((await notifications(flat, callId)).length, 0, 'the clicked notification is closed');
    assert.equal((await pageEvents(flat, { kind: 'tx', type: 'accept' })).at(-1).call_id, callId);
    await flat.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(flat, 'idle', 5000);
    await control.waitForNoCall(10000);

    // ---- Decline from a notification (a plain object, as the test hook allows).
    await control.press();
    const ringing2 = await waitForState(flat, 'ringing', 10000);
    await worker.evaluate((id) => self.intercomOnNotificationClick('decline', { tag: id, data: { call_id: id } }), ringing2.callId);
    await waitForState(flat, 'idle', 5000);
    await control.waitForNoCall(10000);
    assert.equal((await pageEvents(flat, { kind: 'tx', type: 'decline' })).at(-1).call_id, ringing2.callId);

    // ---- #answer=<id> in the address (a window opened from a notification):
    // taken out at once and kept until that call rings. With no ring for it
    // after welcome, the page says the call is over.
    await flat.page.goto('about:blank');
    await flat.page.goto(`${setup.origin}/?raw=1#answer=c-gone`);
    await waitForConnection(flat);
    assert.equal(flat.page.url(), `${setup.origin}/?raw=1`, 'the call id left the address');
    assert.deepEqual((await pageEvents(flat, { kind: 'call-action' })).map((e) => [e.action, e.call_id]), [['answer', 'c-gone']]);
    await waitFor(async () => (await intercomSnapshot(flat.page)).message === 'That call has already ended',
      { timeout: 10000, message: 'the page to say the call is over' });
    await cdp.detach();
  });
});

test('history list, missed marks and the badge; the ring-this-phone control only with push in welcome', { skip, timeout: 120000 }, async () => {
  await withEnv('pwa_history', async (env) => {
    const { setup, browser, flat, token } = await up(env);
    const hub = await pageEvents(flat, { kind: 'rx', type: 'history' });
    // This hub may or may not keep a history yet; the page asked either way.
    assert.equal((await pageEvents(flat, { kind: 'tx', type: 'get_history' })).length >= 1, true, 'get_history after welcome');
    const welcome = (await pageEvents(flat, { kind: 'rx', type: 'welcome' })).at(-1);
    const pushOffered = !!welcome.push;

    // ---- History, injected as the hub sends it.
    const now = Date.now();
    const min = 60000;
    const calls = [
      { call_id: 'h1', door: { id: 'door-1', name: 'Front door' }, started_at_ms: now - 90 * min, outcome: 'answered',
        answered_by: { id: 'flat-1a', name: 'Flat 1A' }, duration_ms: 151000, door_opened: true, quiet_hours: false },
      { call_id: 'h4', door: { id: 'door-1', name: 'Front door' }, started_at_ms: now - 5 * min, outcome: 'missed',
        answered_by: null, duration_ms: null, door_opened: false, quiet_hours: false },
      { call_id: 'h3', door: { id: 'door-2', name: 'Garage' }, started_at_ms: now - 20 * min, outcome: 'missed',
        answered_by: null, duration_ms: null, door_opened: false, quiet_hours: true },
      { call_id: 'h2', door: { id: 'door-1', name: 'Front door' }, started_at_ms: now - 60 * min, outcome: 'declined',
        answered_by: null, duration_ms: null, door_opened: false, quiet_hours: false },
      { call_id: 'h0', door: { id: 'door-1', name: 'Front door' }, started_at_ms: now - 200 * min, outcome: 'missed',
        answered_by: null, duration_ms: null, door_opened: false, quiet_hours: false },
      { call_id: 'h5', door: { id: 'door-1', name: 'Front door' }, started_at_ms: now - 2 * min, outcome: 'failed',
        answered_by: null, duration_ms: null, door_opened: false, quiet_hours: false },
    ];
    const seenBefore = now - 100 * min; // h0 was seen; h3 and h4 are new missed calls
    const result = await flat.page.evaluate(({ calls, seenBefore }) => {
      window.__badge = [];
      navigator.setAppBadge = (n) => { window.__badge.push(n); return Promise.resolve(); };
      navigator.clearAppBadge = () => { window.__badge.push(0); return Promise.resolve(); };
      localStorage.setItem('intercom.historySeenAt.flat-1a', String(seenBefore));
      window.intercom.receive({ type: 'history', calls });
      const items = [...document.querySelectorAll('#history-list li')].map((li) => ({
        id: li.dataset.callId,
        cls: li.className,
        door: li.querySelector('.history-door').textContent,
        outcome: li.querySelector('.history-outcome').textContent,
        time: li.querySelector('time').textContent,
      }));
      return { items, badge: [...window.__badge], unseen: window.intercom.missedUnseen, hidden: document.getElementById('history').hidden };
    }, { calls, seenBefore });
    assert.equal(result.hidden, false, 'the history is shown');
    assert.deepEqual(result.items.map((i) => i.id), ['h5', 'h4', 'h3', 'h2', 'h1', 'h0'], 'newest first');
    const by = Object.fromEntries(result.items.map((i) => [i.id, i]));
    assert.equal(by.h1.outcome, 'Answered by Flat 1A · 2:31Door opened');
    assert.equal(by.h4.outcome, 'Missed');
    assert.equal(by.h3.outcome, 'Missed (quiet hours)');
    assert.equal(by.h3.door, 'Garage');
    assert.equal(by.h2.outcome, 'Declined');
    assert.equal(by.h5.outcome, 'Failed');
    assert.match(by.h4.time, /^\d\d:\d\d$|^Yesterday \d\d:\d\d$/);
    for (const id of ['h4', 'h3', 'h0']) assert.match(by[id].cls, /history-missed/, `${id} marked missed`);
    for (const id of ['h5', 'h2', 'h1']) assert.doesNotMatch(by[id].cls, /history-missed/);
    assert.match(by.h4.cls, /history-new/);
    assert.doesNotMatch(by.h0.cls, /history-new/, 'seen before');
    assert.deepEqual(result.badge, [2], 'badge: two missed calls since the list was last seen');
    assert.equal(result.unseen, 2);

    // Looked at (on screen, page in front): the badge clears and the mark is
    // the newest call's time.
    const seen = await waitFor(() => flat.page.evaluate(() => (window.__badge.at(-1) === 0
      ? { badge: [...window.__badge], mark: localStorage.getItem('intercom.historySeenAt.flat-1a') } : null)),
    { timeout: 5000, message: 'the badge to clear once the list was seen' });
    assert.deepEqual(seen.badge, [2, 0]);
    assert.equal(Number(seen.mark), calls[5].started_at_ms);
    const stored = await flat.page.evaluate(() => Object.keys(localStorage).sort());
    assert.deepEqual(stored, ['intercom.historySeenAt.flat-1a', 'intercom.token'], 'nothing else stored');

    // ---- The subscribe control: only with `push` in welcome.
    const control0 = await flat.page.evaluate(() => ({ state: window.intercom.push, hidden: document.getElementById('push').hidden }));
    if (!pushOffered) assert.deepEqual(control0, { state: 'hidden', hidden: true }, 'no push in welcome: no control');
    await browser.grantPermissions(['notifications'], { origin: setup.origin });
    await flat.page.evaluate((key) => {
      // No push service in the test's namespace: a subscription stand-in.
      let sub = null;
      window.__sent = [];
      const realSend = WebSocket.prototype.send;
      WebSocket.prototype.send = function (d) { window.__sent.push(String(d)); return realSend.call(this, d); };
      PushManager.prototype.getSubscription = async () => sub;
      PushManager.prototype.subscribe = async (opts) => {
        window.__subscribeOpts = { userVisibleOnly: opts.userVisibleOnly, keyLength: new Uint8Array(opts.applicationServerKey).length };
        sub = {
          endpoint: 'https://push.example.net/send/abc123',
          options: { applicationServerKey: new Uint8Array(opts.applicationServerKey).buffer },
          toJSON: () => ({ endpoint: 'https://push.example.net/send/abc123', keys: { p256dh: 'BKey', auth: 'AuthSecret' } }),
          unsubscribe: async () => { sub = null; return true; },
        };
        return sub;
      };
      const w = window.intercom.events.filter((e) => e.kind === 'rx' && e.type === 'welcome').at(-1);
      window.intercom.receive({ ...w, push: { vapid_public_key: key } });
    }, VAPID_KEY);
    await waitFor(() => flat.page.evaluate(() => window.intercom.push === 'off'), { timeout: 5000, message: 'the control offered (off)' });
    const button = flat.page.getByRole('button', { name: 'Ring this phone when the page is closed' });
    assert.equal(await button.isVisible(), true);
    await button.click();
    const subMsg = await waitFor(() => flat.page.evaluate(() => window.__sent.map((d) => JSON.parse(d)).find((m) => m.type === 'push_subscribe')),
      { timeout: 5000, message: 'push_subscribe sent' });
    assert.deepEqual(subMsg.subscription, { endpoint: 'https://push.example.net/send/abc123', keys: { p256dh: 'BKey', auth: 'AuthSecret' } });
    assert.deepEqual(await flat.page.evaluate(() => window.__subscribeOpts), { userVisibleOnly: true, keyLength: 65 });
    // The hub's confirmation (a hub without push answers unknown_type: the
    // page then offers to try again).
    await sleep(300);
    await flat.page.evaluate(() => window.intercom.receive({ type: 'push_subscribed' }));
    await waitFor(() => flat.page.evaluate(() => window.intercom.push === 'on'), { timeout: 5000, message: 'push on' });
    assert.match(await flat.page.locator('#push-status').textContent(), /rings even when the page is closed/);
    await flat.page.getByRole('button', { name: 'Stop ringing this phone when the page is closed' }).click();
    await waitFor(() => flat.page.evaluate(() => window.intercom.push === 'off'), { timeout: 5000, message: 'push off' });
    const unsub = await flat.page.evaluate(() => window.__sent.map((d) => JSON.parse(d)).find((m) => m.type === 'push_unsubscribe'));
    assert.deepEqual(unsub, { type: 'push_unsubscribe', endpoint: 'https://push.example.net/send/abc123' });
    // The endpoint is a capability: never in the page's event log.
    const logged = JSON.stringify(await flat.page.evaluate(() => window.intercom.events));
    assert.equal(logged.includes('abc123'), false, 'the endpoint in the event log');

    // welcome without push again: the control goes away.
    await flat.page.evaluate(() => {
      const w = window.intercom.events.filter((e) => e.kind === 'rx' && e.type === 'welcome').at(-1);
      const { push, ...rest } = w;
      window.intercom.receive(rest);
    });
    assert.deepEqual(await flat.page.evaluate(() => ({ state: window.intercom.push, hidden: document.getElementById('push').hidden })),
      { state: 'hidden', hidden: true });
    assert.equal(flat.console.some((l) => l.includes(token)), false, 'token in the console');
    console.log(`pwa: hub history messages before injection: ${hub.length}; push in welcome: ${pushOffered}`);
  });
});
