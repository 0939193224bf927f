#!/usr/bin/env node
// HTTPS cost benchmark (not part of `node --test`).
//
// Two standalone stations, identical but for [hub.tls]: one serving HTTPS
// and WSS with its self-signed certificate (Chromium trusts its key through
// --ignore-certificate-errors-spki-list), one plain HTTP and WS
// (mode = "off"), each in its own namespace, each page opened by the hub's
// veth address. Measures, alternating between the two:
//   (a, b) page load: navigation start -> `welcome` received on the
//          signaling socket, in a fresh browser context every time (its own
//          connection pool and TLS session cache, so every sample includes
//          a full handshake); with the navigation's connect and TLS times
//          as Navigation Timing gives them (0 when Chromium's preconnect
//          opened the connection, which navigation start still precedes);
//   (c)    press -> first audio packet at the page (remote track unmute), as
//          bench_call_setup.mjs measures it (same kind of browser), over the
//          HTTPS page and over the plain one.
// Prints medians and ratios as JSON on stdout; progress goes to stderr.
//
// Usage: node bench_https.mjs [--loads N] [--calls N]
import fs from 'node:fs';
import { TestEnv } from './lib/fixture.mjs';
import { median, sleep, waitFor, canUseNetns } from './lib/util.mjs';
import { daemonAvailable, DAEMON_BIN, standaloneSetup, bringUpStandalone, waitForLog, logField } from './lib/daemon.mjs';
import { waitForConnection, waitForState, intercomSnapshot } from './lib/answerer.mjs';
import { launchChromiumBrowser } from './lib/browser.mjs';
import { runCleanups } from './lib/cleanup.mjs';

const argv = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const LOADS = arg('--loads', 20);
const CALLS = arg('--calls', 10);
for (const [n, v] of [['--loads', LOADS], ['--calls', CALLS]]) {
  if (!Number.isInteger(v) || v < 1 || v > 200) {
    process.stderr.write(`usage: node bench_https.mjs [--loads N] [--calls N]  (${n}: 1..200)\n`);
    process.exit(2);
  }
}
const progress = (msg) => process.stderr.write(`${msg}\n`);
const round = (x) => (x === null || x === undefined ? null : Math.round(x * 10) / 10);
const ratio = (a, b) => (a && b ? Math.round((a / b) * 100) / 100 : null);

/** A station in its own namespace and a Chromium beside it. */
async function station(env, https) {
  const setup = standaloneSetup(env, { tone: 600, tls: https ? ['mode = "self_signed"'] : ['mode = "off"'] });
  const { daemon, control } = await bringUpStandalone(env, setup);
  let spki = null;
  if (https) spki = logField((await waitForLog(daemon, /hub certificate self-signed/, { timeout: 5000 })).line, 'spki_sha256');
  // Chromium's TLS key log has one CLIENT_HANDSHAKE_TRAFFIC_SECRET line per
  // TLS 1.3 handshake: the count per load shows that each one made its own.
  const keyLog = env.file('tls-keys.log');
  const browser = await launchChromiumBrowser(env.ns, {
    micHz: 1000,
    name: https ? 'https' : 'http',
    spkiList: spki ? [spki] : [],
    // The plain page gets the microphone the way bench_call_setup.mjs gives it.
    secureOrigins: https ? [] : [setup.origin],
    extraArgs: [`--ssl-key-log-file=${keyLog}`],
  });
  return { env, setup, daemon, control, browser, https, spki, keyLog, label: https ? 'https' : 'http' };
}

function handshakes(st) {
  try {
    return fs.readFileSync(st.keyLog, 'utf8').split('\n').filter((l) => l.startsWith('CLIENT_HANDSHAKE_TRAFFIC_SECRET ')).length;
  } catch {
    return 0;
  }
}

/** One page load in a fresh context: navigation start -> welcome. */
async function loadOnce(st) {
  const before = handshakes(st);
  const context = await st.browser.newContext();
  try {
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${st.setup.origin}/?raw=1#token=${st.setup.answerers[0].token}`, { timeout: 15000 });
    const welcome = await waitFor(() => page.evaluate(() => {
      const e = window.intercom && window.intercom.events.find((x) => x.kind === 'rx' && x.type === 'welcome');
      return e ? e.t : null;
    }), { timeout: 15000, interval: 10, message: `${st.label}: welcome` });
    const wall = Date.now() - t0;
    const nav = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0];
      return {
        connect: n.connectEnd - n.connectStart,
        tls: n.secureConnectionStart > 0 ? n.connectEnd - n.secureConnectionStart : null,
        response_end: n.responseEnd,
        load_event: n.loadEventEnd,
        secure: window.isSecureContext,
        ws_scheme: location.protocol === 'https:' ? 'wss' : 'ws',
      };
    });
    if (!nav.secure || st.https !== (nav.ws_scheme === 'wss')) throw new Error(`${st.label}: unexpected page security ${JSON.stringify(nav)}`);
    return {
      nav_to_welcome_ms: round(welcome),
      goto_to_welcome_wall_ms: wall,
      connect_ms: round(nav.connect),
      tls_ms: round(nav.tls),
      response_end_ms: round(nav.response_end),
      load_event_ms: round(nav.load_event),
      tls_handshakes: handshakes(st) - before,
    };
  } finally {
    await context.close();
  }
}

/**
 * The auto-answering page for calls, in a persistent context launched as
 * bench_call_setup.mjs launches it.
 */
async function callPage(st) {
  const context = await st.env.browser({
    micHz: 1000,
    name: `${st.label}-calls`,
    spkiList: st.spki ? [st.spki] : [],
    secureOrigins: st.https ? [] : [st.setup.origin],
  });
  const page = await context.newPage();
  const flat = { page, label: `${st.label}-flat` };
  await page.goto(`${st.setup.origin}/?raw=1&autoaccept=1#token=${st.setup.answerers[0].token}`, { timeout: 15000 });
  await waitForConnection(flat);
  return flat;
}

/** One call answered at once by the page; press -> first audio. */
async function callOnce(st, flat, i) {
  const t0 = Date.now();
  await st.control.press();
  const snap = await waitFor(async () => {
    const s = await intercomSnapshot(flat.page);
    return s.firstAudioAtEpoch && s.callId ? s : null;
  }, { timeout: 20000, interval: 20, message: `${st.label} call ${i + 1}: first audio at the page` });
  const sample = {
    press_to_ring_ms: round(snap.ringAtEpoch - t0),
    press_to_first_audio_ms: round(snap.firstAudioAtEpoch - t0),
  };
  progress(`${st.label} call ${i + 1}/${CALLS}: ${JSON.stringify(sample)}`);
  await waitForState(flat, 'in_call', 10000);
  await st.control.hangup();
  await waitForState(flat, 'idle', 5000);
  await st.control.waitForNoCall(10000);
  await sleep(300);
  return sample;
}

const medians = (samples) => {
  const out = {};
  for (const k of Object.keys(samples[0])) out[k] = round(median(samples.map((s) => s[k])));
  return out;
};

async function main() {
  if (!canUseNetns()) throw new Error('needs root and iproute2 (network namespaces)');
  if (!daemonAvailable()) throw new Error(`intercomd binary not found at ${DAEMON_BIN}`);
  const envs = [await TestEnv.create('bench_https_tls'), await TestEnv.create('bench_https_plain')];
  let failed = false;
  try {
    const tls = await station(envs[0], true);
    const plain = await station(envs[1], false);
    // One unmeasured load each: Chromium's first navigation pays for its own
    // start-up, and may meet ERR_NETWORK_CHANGED while its view of the
    // namespace's links settles.
    for (const st of [tls, plain]) {
      await waitFor(() => loadOnce(st).then(() => true), { timeout: 20000, interval: 500, message: `${st.label}: a first page load` });
    }
    const loads = { https: [], http: [] };
    for (let i = 0; i < LOADS; i++) {
      // Alternate which goes first, so a drift in the machine's load is shared.
      const order = i % 2 ? [plain, tls] : [tls, plain];
      for (const st of order) {
        const s = await loadOnce(st);
        loads[st.label].push(s);
        progress(`${st.label} load ${i + 1}/${LOADS}: ${JSON.stringify(s)}`);
      }
    }
    for (const st of [tls, plain]) await st.browser.close();
    // Calls alternate too: press -> first audio drifts with the machine's
    // load by tens of milliseconds between runs (BENCHMARKS.md).
    const pages = { https: await callPage(tls), http: await callPage(plain) };
    const callSamples = { https: [], http: [] };
    for (let i = 0; i < CALLS; i++) {
      for (const st of i % 2 ? [plain, tls] : [tls, plain]) callSamples[st.label].push(await callOnce(st, pages[st.label], i));
    }
    const callsHttps = callSamples.https;
    const callsHttp = callSamples.http;
    const mLoad = { https: medians(loads.https), http: medians(loads.http) };
    const mCall = { https: medians(callsHttps), http: medians(callsHttp) };
    const out = {
      loads: LOADS,
      calls: CALLS,
      page_load_to_welcome: {
        median: mLoad,
        ratio_https_http: ratio(mLoad.https.nav_to_welcome_ms, mLoad.http.nav_to_welcome_ms),
      },
      press_to_first_audio: {
        median: mCall,
        ratio_https_http: ratio(mCall.https.press_to_first_audio_ms, mCall.http.press_to_first_audio_ms),
      },
      samples: { loads, calls: { https: callsHttps, http: callsHttp } },
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } catch (err) {
    failed = true;
    for (const e of envs) e.dump(err);
    throw err;
  } finally {
    for (const e of envs) await e.close({ keep: failed });
  }
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`benchmark failed: ${err.stack || err}\n`);
  runCleanups();
  process.exit(1);
});
