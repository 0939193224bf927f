#!/usr/bin/env node
// Push to notification benchmark (not part of `node --test`).
//
// A standalone station (its hub on the namespace's loopback, a secure
// context) serves the answering page once, so its service worker installs;
// the page is then closed, as on a phone in a pocket. Each sample delivers a
// ring payload of the hub's shape (a fresh call id) to the worker with
// DevTools' ServiceWorker.deliverPushMessage and measures the time from just
// before that command to the notification being in
// registration.getNotifications(), polled every 2 ms inside the worker
// itself (no DevTools round trip per poll). The worker stays running between
// samples, as it does while a phone's notifications arrive; the first,
// unmeasured, delivery starts it. Each notification is closed after its
// sample. Prints the median and spread as JSON on stdout; progress on
// stderr.
//
// Usage: node bench_push_notify.mjs [--samples N]
import { TestEnv } from './lib/fixture.mjs';
import { median, canUseNetns, waitFor } from './lib/util.mjs';
import { daemonAvailable, DAEMON_BIN, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection } from './lib/answerer.mjs';
import { swRegistrationId, swWorker } from './lib/sw.mjs';
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
    const worker = await swWorker(browser, setup.origin, 10000);
    await waitFor(() => worker.evaluate(async () => (await self.registration.getNotifications({ tag: 'bench-warmup' })).length === 1),
      { timeout: 10000, message: 'the warm-up notification' });
    await worker.evaluate(async () => {
      for (const n of await self.registration.getNotifications()) n.close();
      // Resolves with Date.now() when a notification tagged `tag` is there.
      self.__benchWatch = (tag, limitMs) => new Promise((resolve) => {
        const until = Date.now() + limitMs;
        const poll = () => self.registration.getNotifications({ tag }).then((l) => {
          if (l.length) { const t = Date.now(); l.forEach((n) => n.close()); resolve(t); } else if (Date.now() > until) resolve(null); else setTimeout(poll, 2);
        });
        poll();
      });
    });

    const samples = [];
    for (let n = 0; n < SAMPLES; n++) {
      const tag = `bench-${n}`;
      const watched = worker.evaluate((t) => self.__benchWatch(t, 5000), tag);
      const t0 = Date.now();
      await deliver(ringPayload(tag));
      const shownAt = await watched;
      if (shownAt === null) throw new Error(`sample ${n}: no notification within 5 s`);
      const ms = shownAt - t0;
      samples.push(ms);
      progress(`sample ${n + 1}/${SAMPLES}: ${ms} ms`);
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
