#!/usr/bin/env node
// Push to notification benchmark (not part of `node --test`).
//
// A standalone station (its hub on the namespace's loopback, a secure
// context) serves the answering page once, so its service worker installs;
// the page is then closed, as on a phone in a pocket. Each sample delivers a
// ring payload of the hub's shape (a fresh call id) to the worker with
// DevTools' ServiceWorker.deliverPushMessage and measures the time from just
// before that command to the worker's own timestamp when showNotification()
// resolved for it (Date.now() in the worker, same clock; polled every 2 ms).
// Then, with nothing in flight, it checks that
// registration.getNotifications() lists it, and closes it. (Polling
// getNotifications() while a notification is being shown can make Chromium
// drop it from the list, so that is not the clock.) The worker stays running
// between samples, as it does while a phone's notifications arrive; the
// first, unmeasured, deliveries start it. Prints the median and spread as
// JSON on stdout; progress on stderr.
//
// Usage: node bench_push_notify.mjs [--samples N]
import { TestEnv } from './lib/fixture.mjs';
import { median, canUseNetns, waitFor } from './lib/util.mjs';
import { daemonAvailable, DAEMON_BIN, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection } from './lib/answerer.mjs';
import { swRegistrationId, swWorker, swTrackPushes, swPushHandled } from './lib/sw.mjs';
import { runCleanups } from './lib/cleanup.mjs';

const argv = process.argv.slice(2);
const i = argv.indexOf('--samples');
const SAMPLES = i >= 0 ? Number(argv[i + 1]) : 20;
if (!Number.isInteger(SAMPLES) || SAMPLES < 1 || SAMPLES > 500) {
  process.stderr.write('usage: node bench_push_notify.mjs [--samples N]  (1..500)\n');
  process.exit(2);
}
const progress = (msg) => process.stderr.write(`${msg}\n`);
const round = (x) => (x === null || x === undefined ? null : Math.round(x * 10) / 10);
const GOAL_MS = 300;

function ringPayload(callId) {
  return JSON.stringify({ kind: 'ring', call_id: callId, door: { id: 'door-1', name: 'Front door' }, at_ms: Date.now() });
}

async function main() {
  if (!canUseNetns()) throw new Error('needs root and iproute2 (network namespaces)');
  if (!daemonAvailable()) throw new Error(`intercomd binary not found at ${DAEMON_BIN}`);
  const env = await TestEnv.create('bench_push_notify');
  let failed = false;
  try {
    const setup = standaloneSetup(env, { tone: 600, hubHost: '127.0.0.1' });
    await bringUpStandalone(env, setup);
    const browser = await env.browser({});
    await browser.grantPermissions(['notifications'], { origin: setup.origin });
    const blank = browser.pages()[0] || await browser.newPage();
    const cdp = await browser.newCDPSession(blank);
    const page = await env.page(browser, `${setup.origin}/?raw=1#token=${setup.answerers[0].token}`, 'flat-1a');
    await waitForConnection(page);
    await page.page.evaluate(() => navigator.serviceWorker.ready);
    const registrationId = await swRegistrationId(cdp, `${setup.origin}/`);
    await page.page.close();
    const deliver = (data) => cdp.send('ServiceWorker.deliverPushMessage', { origin: setup.origin, registrationId, data });

    // Unmeasured: starts the worker (it may have stopped with the page).
    await deliver(ringPayload('bench-warmup'));
    await swWorker(browser, setup.origin, 10000);
    await swTrackPushes(browser, setup.origin);
    await deliver(ringPayload('bench-warmup-2'));
    await swPushHandled(browser, setup.origin, 'ring', 'bench-warmup-2');
    const worker = await swWorker(browser, setup.origin);
    await worker.evaluate(async () => { for (const n of await self.registration.getNotifications()) n.close(); });

    const samples = [];
    let listed = 0;
    for (let n = 0; n < SAMPLES; n++) {
      const tag = `bench-${n}`;
      const t0 = Date.now();
      await deliver(ringPayload(tag));
      const rec = await waitFor(() => worker.evaluate((t) => self.__pushes.find((r) => r.call_id === t && (r.doneAt || r.error)), tag),
        { timeout: 5000, interval: 2, message: `sample ${n}: the worker to show the notification` });
      if (rec.error) throw new Error(`sample ${n}: ${rec.error}`);
      const ms = rec.doneAt - t0;
      samples.push(ms);
      // Then, with nothing in flight, the notification is listed; closed for the next sample.
      const there = await worker.evaluate(async (t) => {
        const l = await self.registration.getNotifications({ tag: t });
        l.forEach((x) => x.close());
        return l.length === 1;
      }, tag);
      if (there) listed++;
      progress(`sample ${n + 1}/${SAMPLES}: ${ms} ms${there ? '' : ' (not listed by getNotifications)'}`);
    }
    const sorted = [...samples].sort((a, b) => a - b);
    const out = {
      samples: SAMPLES,
      deliver_to_notification_ms: {
        median: round(median(samples)),
        min: sorted[0],
        p90: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))],
        max: sorted.at(-1),
      },
      listed_by_getNotifications: listed,
      goal_ms: GOAL_MS,
      within_goal: median(samples) <= GOAL_MS,
      all: samples,
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    await cdp.detach();
  } catch (err) {
    failed = true;
    env.dump(err);
    throw err;
  } finally {
    await env.close({ keep: failed });
  }
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`benchmark failed: ${err.stack || err}\n`);
  runCleanups();
  process.exit(1);
});
