#!/usr/bin/env node
// Call setup through NATs and TURN (not part of `node --test`).
//
// For each path of lib/natpaths.mjs, in a fresh NAT rig (lib/natrig.mjs):
//   intercomd: N calls, button press -> first audio packet at the
//     auto-accepting page (remote track unmute), and press -> the door's
//     AUDIO CONNECTION ESTABLISHED line, with the selected pair;
//   reference: a door implemented in Chromium (door_page.html) in the same
//     namespace behind the same NAT, through the same hub and coturn, ring ->
//     first audio at the same page.
// Prints JSON on stdout; progress goes to stderr.
//
// Usage: node bench_nat_paths.mjs [--calls N] [--paths direct,relay-only,…]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, sleep, waitFor, canUseNetns } from './lib/util.mjs';
import { daemonAvailable, DAEMON_BIN, waitForLog, logTime } from './lib/daemon.mjs';
import { waitForState, intercomSnapshot } from './lib/answerer.mjs';
import { runCleanups } from './lib/cleanup.mjs';
import { withRig, natRigSkipReason } from './lib/natrig.mjs';
import { bringUpNatCall, turnServers, selectedPair } from './lib/natcall.mjs';
import { NAT_PATHS } from './lib/natpaths.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const arg = (name) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
const N = Number(arg('--calls') ?? 5);
const only = arg('--paths') ? arg('--paths').split(',') : null;
if (!Number.isInteger(N) || N < 1 || N > 50) {
  process.stderr.write('usage: node bench_nat_paths.mjs [--calls N (1..50)] [--paths a,b]\n');
  process.exit(2);
}
const progress = (msg) => process.stderr.write(`${msg}\n`);
const round = (x) => (x === null || x === undefined ? null : Math.round(x * 10) / 10);

async function benchPath(rig, p) {
  await rig.startTurn();
  if (p.before) await p.before(rig);
  const s = await bringUpNatCall(rig, {
    servers: turnServers(rig, p.kinds), relayOnly: !!p.relayOnly,
    extraDoors: [{ id: 'door-ref', name: 'Browser door' }], pageParams: 'raw=1&autoaccept=1',
  });
  const mine = [];
  for (let i = 0; i < N; i++) {
    const from = s.door.lines.length;
    const t0 = Date.now();
    await s.control.press();
    const snap = await waitFor(async () => {
      const x = await intercomSnapshot(s.page.page);
      return x.firstAudioAtEpoch && x.callId ? x : null;
    }, { timeout: 30000, interval: 20, message: `${p.name} call ${i + 1}: first audio at the page` });
    const est = await waitForLog(s.door, /AUDIO CONNECTION ESTABLISHED/, { from, timeout: 30000 });
    const pair = selectedPair(est.line);
    const sample = {
      press_to_first_audio_ms: round(snap.firstAudioAtEpoch - t0),
      press_to_established_ms: round(logTime(est.line) - t0),
      pair: pair ? `${pair.local}/${pair.remote}` : null,
    };
    mine.push(sample);
    progress(`${p.name} intercomd ${i + 1}/${N}: ${JSON.stringify(sample)}`);
    await waitForState(s.page, 'in_call', 10000);
    await s.control.hangup();
    await waitForState(s.page, 'idle', 5000);
    await s.control.waitForNoCall(10000);
    await sleep(300);
  }

  // Reference: Chromium as the door, behind the same NAT.
  const ref = s.tokens.extra[0];
  const doorBrowser = await rig.browser('door', { micHz: 600, secureOrigins: [s.origin], name: 'door-ref', routedPages: true });
  const html = fs.readFileSync(path.join(here, 'door_page.html'), 'utf8');
  await doorBrowser.route(`${s.origin}/door.html`, (route) => route.fulfill({ contentType: 'text/html', body: html }));
  const dp = await rig.page(doorBrowser, `${s.origin}/door.html#token=${ref.token}${p.relayOnly ? '&relay=1' : ''}`, 'door-ref');
  await waitFor(() => dp.page.evaluate(() => window.door.connected && window.door.micReady), { timeout: 10000, message: 'browser door ready' });
  const theirs = [];
  for (let i = 0; i < N; i++) {
    const callId = `ref-${Date.now()}-${i}`;
    await dp.page.evaluate((cid) => window.door.ring(cid), callId);
    const snap = await waitFor(async () => {
      const x = await intercomSnapshot(s.page.page);
      return x.callId === callId && x.firstAudioAtEpoch ? x : null;
    }, { timeout: 30000, interval: 20, message: `${p.name} reference call ${i + 1}: first audio at the page` });
    const sent = await dp.page.evaluate(() => window.door.ringSentAtEpoch);
    const sample = { ring_to_first_audio_ms: round(snap.firstAudioAtEpoch - sent) };
    theirs.push(sample);
    progress(`${p.name} browser door ${i + 1}/${N}: ${JSON.stringify(sample)}`);
    await dp.page.evaluate(() => window.door.hangup('normal'));
    await waitForState(s.page, 'idle', 5000);
    await sleep(300);
  }
  const pairs = [...new Set(mine.map((x) => x.pair))];
  return {
    path: p.name,
    what: p.what,
    intercomd_selected_pairs: pairs,
    intercomd_press_to_first_audio_ms: round(median(mine.map((x) => x.press_to_first_audio_ms))),
    intercomd_press_to_established_ms: round(median(mine.map((x) => x.press_to_established_ms))),
    browser_door_ring_to_first_audio_ms: round(median(theirs.map((x) => x.ring_to_first_audio_ms))),
    samples: { intercomd: mine, browser_door: theirs },
  };
}

async function main() {
  if (!canUseNetns()) throw new Error('needs root and iproute2 (network namespaces)');
  if (!daemonAvailable()) throw new Error(`intercomd binary not found at ${DAEMON_BIN}`);
  const skip = natRigSkipReason();
  if (skip) throw new Error(skip);
  const results = [];
  for (const p of NAT_PATHS) {
    if (only && !only.includes(p.name)) continue;
    results.push(await withRig(p.rig, (rig) => benchPath(rig, p)));
  }
  process.stdout.write(`${JSON.stringify({ calls_per_path: N, binary: DAEMON_BIN, results }, null, 2)}\n`);
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`benchmark failed: ${err.stack || err}\n`);
  runCleanups();
  process.exit(1);
});
