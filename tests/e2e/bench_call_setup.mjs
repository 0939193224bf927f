#!/usr/bin/env node
// Call setup benchmark (not part of `node --test`).
//
// intercomd: N calls, each started by a simulated button press and answered
// at once by the answering page (autoaccept=1). Measures
//   press -> "AUDIO CONNECTION ESTABLISHED" (daemon log timestamp) and
//   press -> first audio packet at the page (remote track unmute).
// Reference: a door implemented in Chromium (door_page.html) through an
// `intercomd hub`, same answering page, measuring ring -> first audio packet.
// Prints medians and the ratio as JSON on stdout; progress goes to stderr.
//
// Usage: node bench_call_setup.mjs [--calls N]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestEnv } from './lib/fixture.mjs';
import { median, sleep, waitFor, canUseNetns } from './lib/util.mjs';
import {
  daemonAvailable, DAEMON_BIN, standaloneSetup, bringUpStandalone, buildConfig, makeToken, startDaemon,
  waitForHttp, waitForLog, logTime,
} from './lib/daemon.mjs';
import { waitForConnection, waitForState, intercomSnapshot } from './lib/answerer.mjs';
import { runCleanups } from './lib/cleanup.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const callsArg = argv.indexOf('--calls');
const N = callsArg >= 0 ? Number(argv[callsArg + 1]) : 10;
if (!Number.isInteger(N) || N < 1 || N > 200) {
  process.stderr.write('usage: node bench_call_setup.mjs [--calls N]  (1..200)\n');
  process.exit(2);
}
const progress = (msg) => process.stderr.write(`${msg}\n`);
const round = (x) => (x === null || x === undefined ? null : Math.round(x * 10) / 10);

/** Resident set size of the daemon process, in KiB (Linux /proc). */
function rssKiB(daemon) {
  const pid = daemon.child ? daemon.child.pid : daemon.pid;
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function benchIntercomd(env) {
  const setup = standaloneSetup(env, { tone: 600 });
  const { daemon, control } = await bringUpStandalone(env, setup);
  const browser = await env.browser({ micHz: 1000, secureOrigins: [setup.origin], name: 'flat' });
  const flat = await env.page(browser, `${setup.origin}/?raw=1&autoaccept=1#token=${setup.answerers[0].token}`, 'flat-1a');
  await waitForConnection(flat);
  const samples = [];
  for (let i = 0; i < N; i++) {
    const from = daemon.lines.length;
    const t0 = Date.now();
    await control.press();
    const snap = await waitFor(async () => {
      const s = await intercomSnapshot(flat.page);
      return s.firstAudioAtEpoch && s.callId ? s : null;
    }, { timeout: 20000, interval: 20, message: `call ${i + 1}: first audio at the page` });
    const est = await waitForLog(daemon, /AUDIO CONNECTION ESTABLISHED/, { from, timeout: 20000 });
    if (!est.line.includes(snap.callId)) throw new Error(`AUDIO CONNECTION ESTABLISHED line is for another call: ${est.line}`);
    const tEst = logTime(est.line);
    const pressed = daemon.lines.slice(from).find((l) => /call button pressed/.test(l) && l.includes(snap.callId));
    const hubRing = daemon.lines.slice(from).find((l) => /rings group/.test(l) && l.includes(snap.callId));
    const tPressed = pressed ? logTime(pressed) : null;
    const tHubRing = hubRing ? logTime(hubRing) : null;
    const sample = {
      call_id: snap.callId,
      press_to_daemon_press_ms: tPressed === null ? null : round(tPressed - t0),
      daemon_press_to_hub_ring_ms: tPressed === null || tHubRing === null ? null : round(tHubRing - tPressed),
      hub_ring_to_page_ring_ms: tHubRing === null ? null : round(snap.ringAtEpoch - tHubRing),
      press_to_ring_ms: round(snap.ringAtEpoch - t0),
      press_to_established_ms: tEst === null ? null : round(tEst - t0),
      press_to_first_audio_ms: round(snap.firstAudioAtEpoch - t0),
      ring_to_first_audio_ms: round(snap.firstAudioAtEpoch - snap.ringAtEpoch),
    };
    samples.push(sample);
    progress(`intercomd call ${i + 1}/${N}: ${JSON.stringify(sample)}`);
    await waitForState(flat, 'in_call', 10000);
    sample.rss_in_call_kib = rssKiB(daemon);
    await control.hangup();
    await waitForState(flat, 'idle', 5000);
    await control.waitForNoCall(10000);
    await sleep(300);
  }
  return samples;
}

async function benchReference(env) {
  const { ns } = env;
  const hubAddr = `${ns.addrA}:8081`;
  const origin = `http://${hubAddr}`;
  const door = makeToken(env, 'door-ref');
  const flatTok = makeToken(env, 'flat-ref');
  const cfg = env.file('hub-ref.toml');
  fs.writeFileSync(cfg, buildConfig({
    // A hub-only process still validates [station]; give it an id of its own.
    station: { id: 'hub-ref', name: 'Hub' },
    hub: {
      listen: hubAddr,
      answerers: [{ id: 'flat-1a', name: 'Flat 1A', file: flatTok.file, groups: ['residents'] }],
      doors: [{ id: 'door-ref', name: 'Browser door', file: door.file }],
    },
  }));
  const hub = startDaemon(env, cfg, { cmd: 'hub', label: 'hub-ref' });
  const sockets = await ns.forward({ hubref: hubAddr });
  await waitForHttp(sockets.hubref, '/', hub, 'the reference hub');
  const doorBrowser = await env.browser({ micHz: 600, secureOrigins: [origin], name: 'door-ref', routedPages: true });
  const flatBrowser = await env.browser({ micHz: 1000, secureOrigins: [origin], name: 'flat-ref' });
  const html = fs.readFileSync(path.join(here, 'door_page.html'), 'utf8');
  await doorBrowser.route(`${origin}/door.html`, (route) => route.fulfill({ contentType: 'text/html', body: html }));
  const flat = await env.page(flatBrowser, `${origin}/?raw=1&autoaccept=1#token=${flatTok.token}`, 'flat-ref');
  const dp = await env.page(doorBrowser, `${origin}/door.html#token=${door.token}`, 'door-ref');
  await waitForConnection(flat);
  await waitFor(() => dp.page.evaluate(() => window.door.connected && window.door.micReady), { timeout: 10000, message: 'browser door ready' });
  const samples = [];
  for (let i = 0; i < N; i++) {
    const callId = `ref-${Date.now()}-${i}`;
    await dp.page.evaluate((cid) => window.door.ring(cid), callId);
    const snap = await waitFor(async () => {
      const s = await intercomSnapshot(flat.page);
      return s.callId === callId && s.firstAudioAtEpoch ? s : null;
    }, { timeout: 20000, interval: 20, message: `reference call ${i + 1}: first audio at the page` });
    const doorSide = await waitFor(() => dp.page.evaluate(() => (window.door.connectedAtEpoch ? {
      ringSentAtEpoch: window.door.ringSentAtEpoch, connectedAtEpoch: window.door.connectedAtEpoch,
    } : null)), { timeout: 10000, interval: 20, message: 'browser door connected' });
    const sample = {
      call_id: callId,
      ring_to_ring_ms: round(snap.ringAtEpoch - doorSide.ringSentAtEpoch),
      ring_to_connected_ms: round(doorSide.connectedAtEpoch - doorSide.ringSentAtEpoch),
      ring_to_first_audio_ms: round(snap.firstAudioAtEpoch - doorSide.ringSentAtEpoch),
    };
    samples.push(sample);
    progress(`reference call ${i + 1}/${N}: ${JSON.stringify(sample)}`);
    await dp.page.evaluate(() => window.door.hangup('normal'));
    await waitForState(flat, 'idle', 5000);
    await sleep(300);
  }
  return samples;
}

async function main() {
  if (!canUseNetns()) throw new Error('needs root and iproute2 (network namespaces)');
  if (!daemonAvailable()) throw new Error(`intercomd binary not found at ${DAEMON_BIN}`);
  const env = await TestEnv.create('bench_call_setup');
  let failed = false;
  try {
    const mine = await benchIntercomd(env);
    const ref = await benchReference(env);
    const m = {
      press_to_ring_ms: median(mine.map((s) => s.press_to_ring_ms)),
      press_to_established_ms: median(mine.map((s) => s.press_to_established_ms)),
      press_to_first_audio_ms: median(mine.map((s) => s.press_to_first_audio_ms)),
      page_ring_to_first_audio_ms: median(mine.map((s) => s.ring_to_first_audio_ms)),
      rss_in_call_kib: median(mine.map((s) => s.rss_in_call_kib).filter((x) => x !== null)),
    };
    const r = {
      ring_to_ring_ms: median(ref.map((s) => s.ring_to_ring_ms)),
      ring_to_connected_ms: median(ref.map((s) => s.ring_to_connected_ms)),
      ring_to_first_audio_ms: median(ref.map((s) => s.ring_to_first_audio_ms)),
    };
    const ratio = (a, b) => (a && b ? Math.round((a / b) * 100) / 100 : null);
    for (const o of [m, r]) for (const k of Object.keys(o)) o[k] = round(o[k]);
    const out = {
      calls: N,
      intercomd: { median: m, samples: mine },
      reference_browser_door: { median: r, samples: ref },
      // intercomd press -> first audio over the browser door's ring -> first audio
      ratio_first_audio: ratio(m.press_to_first_audio_ms, r.ring_to_first_audio_ms),
      // the same from the moment the page rings, which leaves out the door's own press handling
      ratio_page_ring_to_first_audio: ratio(m.page_ring_to_first_audio_ms, r.ring_to_first_audio_ms),
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
