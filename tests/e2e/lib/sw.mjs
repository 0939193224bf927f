// The answering app's service worker seen from a test: its registration in
// DevTools (to deliver push messages), its notifications, and Answer/Decline
// run in the worker as a notification click runs them.
import { waitFor } from './util.mjs';

/**
 * The registration id of the worker for `scope`, from DevTools'
 * ServiceWorker domain (`cdp`: a session on any page of the profile).
 */
export async function swRegistrationId(cdp, scope) {
  const regs = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (ev) => regs.push(...ev.registrations));
  await cdp.send('ServiceWorker.enable');
  const reg = await waitFor(() => regs.find((r) => r.scopeURL === scope && !r.isDeleted),
    { timeout: 5000, message: `the service worker registration for ${scope}` });
  return reg.registrationId;
}

/** The running worker of `origin` in playwright (a delivered push starts it). */
export function swWorker(context, origin, timeout = 5000) {
  return waitFor(() => context.serviceWorkers().filter((w) => w.url() === `${origin}/sw.js`).at(-1),
    { timeout, interval: 20, message: `the worker ${origin}/sw.js` });
}

/** The worker's notifications (with `tag`, if given), as plain objects. */
export async function swNotifications(context, origin, tag) {
  const w = await swWorker(context, origin);
  return w.evaluate(async (t) => {
    const list = await self.registration.getNotifications(t ? { tag: t } : undefined);
    return list.map((n) => ({ title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction,
      renotify: n.renotify, actions: n.actions.map((a) => ({ action: a.action, title: a.title })), data: n.data, timestamp: n.timestamp }));
  }, tag || null);
}

/**
 * Run the worker's notification click (`action` on the notification tagged
 * `callId`) with no app window open: sw.js asks clients.openWindow() for
 * "/#<action>=<id>". Chromium opens a window from a worker only inside a
 * notification click it dispatched itself (a click on a shown
 * notification), which DevTools cannot make; when it refuses
 * (InvalidAccessError) the test opens the URL the worker asked for in a new
 * page of the same profile, as the click would have.
 * Returns { url, how: 'openWindow' | 'test' }.
 */
export async function openWindowFromWorker(context, origin, action, callId) {
  const w = await swWorker(context, origin);
  const res = await w.evaluate(async ({ action, callId }) => {
    const [note] = await self.registration.getNotifications({ tag: callId });
    if (!note) throw new Error(`no notification tagged ${callId}`);
    const clients = self.clients;
    const real = Object.getPrototypeOf(clients).openWindow;
    let url = null;
    let refused = null;
    clients.openWindow = function (u) {
      url = u;
      return real.call(clients, u).catch((e) => { refused = e.name; return null; });
    };
    try {
      await self.intercomOnNotificationClick(action, note);
    } finally {
      delete clients.openWindow;
    }
    return { url, refused };
  }, { action, callId });
  if (!res.url) throw new Error(`the worker opened no window: ${JSON.stringify(res)}`);
  if (!res.refused) return { url: res.url, how: 'openWindow' };
  if (res.refused !== 'InvalidAccessError') throw new Error(`openWindow refused: ${res.refused}`);
  const page = await context.newPage();
  await page.goto(new URL(res.url, origin).toString(), { timeout: 15000 });
  return { url: res.url, how: 'test' };
}

/**
 * Record, in the running worker, each push it handles and when its
 * notification work (showNotification, or closing for `end`) finished:
 * self.__pushes = [{ kind, call_id, doneAt, error }]. Waiting on that, not
 * polling getNotifications() while a push is being shown, matters: in
 * Chromium a getNotifications() that runs while a notification is being
 * shown can drop that notification from its list for good.
 */
export async function swTrackPushes(context, origin) {
  const w = await swWorker(context, origin);
  await w.evaluate(() => {
    if (self.__pushes) return;
    const real = self.intercomOnPush;
    self.__pushes = [];
    self.intercomOnPush = (d) => {
      const rec = { kind: d && d.kind, call_id: d && d.call_id, doneAt: null, error: null };
      self.__pushes.push(rec);
      return real(d).then((v) => { rec.doneAt = Date.now(); return v; }, (e) => { rec.error = String(e); throw e; });
    };
  });
}

/** Wait until the worker has handled the `kind` push of `callId`; returns its record. */
export async function swPushHandled(context, origin, kind, callId, timeout = 10000) {
  let seen;
  try {
    return await waitFor(async () => {
      const w = await swWorker(context, origin);
      seen = await w.evaluate(() => self.__pushes || null);
      const rec = (seen || []).find((r) => r.kind === kind && r.call_id === callId);
      if (rec && rec.error) throw new Error(`the worker failed on the ${kind} push: ${rec.error}`);
      return rec && rec.doneAt ? rec : null;
    }, { timeout, interval: 50, message: `the worker to handle the ${kind} push of ${callId}` });
  } catch (err) {
    err.message += `; pushes seen by the worker: ${JSON.stringify(seen)}`;
    throw err;
  }
}
