#!/usr/bin/env node
// Web Push benchmark (not part of `node --test`).
//
// A standalone station with push on; flat 1A has its page open and a phone
// subscribed on the test push service (tests/push/push_service.py) on the
// namespace's loopback. N presses, each measured two ways in the same call:
//   press -> the push request arriving at the push service (its
//            `received_ms`: headers in; VAPID signing and RFC 8291
//            encryption in the hub, plus loopback)
//   press -> the open page's `ring` (the page's timestamp of the message)
// The door cancels each call (an `end` push follows). Prints medians as
// JSON on stdout; progress goes to stderr.
//
// Usage: node bench_push.mjs [--calls N]
import { TestEnv } from './lib/fixture.mjs';
import { median, sleep, waitFor, canUseNetns } from './lib/util.mjs';
import { daemonAvailable, DAEMON_BIN, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, intercomSnapshot } from './lib/answerer.mjs';
import { PushService, pushServiceSkipReason, subscribeRaw } from './lib/push_service.mjs';
import { runCleanups } from './lib/cleanup.mjs';

const argv = process.argv.slice(2);
const callsArg = argv.indexOf('--calls');
const N = callsArg >= 0 ? Number(argv[callsArg + 1]) : 20;
if (!Number.isInteger(N) || N < 1 || N > 200) {
  process.stderr.write('usage: node bench_push.mjs [--calls N]  (1..200)\n');
  process.exit(2);
}
const GOAL_MS = 50;
const progress = (msg) => process.stderr.write(`${msg}\n`);
const round = (x) => (x === null || x === undefined ? null : Math.round(x * 10) / 10);

async function bench(env) {
  const svc = await PushService.start(env);
  const setup = standaloneSetup(env, { push: { subject: 'mailto:bench@test.invalid' } });
  const { control, sockets } = await bringUpStandalone(env, setup);
  const tok = setup.answerers[0];
  await subscribeRaw(sockets.hub, setup.origin, tok.token, svc.subscription('flat-1a'));
  const browser = await env.browser({ micHz: 1000, secureOrigins: [setup.origin], name: 'flat' });
  const flat = await env.page(browser, `${setup.origin}/?raw=1#token=${tok.token}`, 'flat-1a');
  await waitForConnection(flat);
  // One warm-up call: the first push opens the hub's HTTP client.
  const samples = [];
  for (let i = -1; i < N; i++) {
    const before = svc.records().length;
    const t0 = Date.now();
    await control.press();
    const snap = await waitFor(async () => {
      const s = await intercomSnapshot(flat.page);
      return s.state === 'ringing' && s.callId && s.ringAtEpoch >= t0 ? s : null;
    }, { timeout: 10000, interval: 10, message: `call ${i + 1}: the page rings` });
    const rec = await waitFor(() => svc.records().slice(before).find((r) => r.json?.kind === 'ring' && r.json.call_id === snap.callId),
      { timeout: 10000, interval: 10, message: `call ${i + 1}: the ring push` });
    if (!rec.vapid.ok || rec.status_returned !== 201) throw new Error(`push not accepted: ${JSON.stringify(rec)}`);
    const sample = {
      call_id: snap.callId,
      press_to_push_ms: round(rec.received_ms - t0),
      press_to_page_ring_ms: round(snap.ringAtEpoch - t0),
    };
    if (i >= 0) samples.push(sample);
    progress(`${i < 0 ? 'warm-up' : `call ${i + 1}/${N}`}: ${JSON.stringify(sample)}`);
    await control.hangup();
    await control.waitForNoCall(10000);
    await waitFor(() => svc.records().slice(before).find((r) => r.json?.kind === 'end' && r.json.call_id === snap.callId),
      { timeout: 10000, interval: 20, message: `call ${i + 1}: the end push` });
    await sleep(200);
  }
  return samples;
}

async function main() {
  if (!canUseNetns()) throw new Error('needs root and iproute2 (network namespaces)');
  if (!daemonAvailable()) throw new Error(`intercomd binary not found at ${DAEMON_BIN}`);
  const noPush = pushServiceSkipReason();
  if (noPush) throw new Error(noPush);
  const env = await TestEnv.create('bench_push');
  let failed = false;
  try {
    const samples = await bench(env);
    const m = {
      press_to_push_ms: round(median(samples.map((s) => s.press_to_push_ms))),
      press_to_page_ring_ms: round(median(samples.map((s) => s.press_to_page_ring_ms))),
    };
    const out = {
      calls: N,
      goal_press_to_push_ms: GOAL_MS,
      goal_met: m.press_to_push_ms <= GOAL_MS,
      median: m,
      max_press_to_push_ms: Math.max(...samples.map((s) => s.press_to_push_ms)),
      samples,
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
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
