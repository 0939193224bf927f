// A whole call through a real socket.io 4 server: the door station in
// `signaling.mode = "socketio"`, the relay of relay_server.mjs, and a
// resident's page in headless Chromium using socket.io-client, all inside a
// network namespace of the end-to-end harness (../e2e/lib: a veth pair,
// no route out, teardown always).
//
// - A door with a wrong token is refused (connect_error): it logs the
//   server's reason, never its token, and retries with growing delays.
// - The real door joins, the button is pressed, the page answers (the
//   product's answering page with a Socket.IO transport, answer.js), audio
//   flows both ways (checked by content) while the server pings every
//   second (pingTimeout 0.8 s: a door that missed one pong would be
//   dropped, and the server logs why).
// - The socket.io server is restarted mid-call: the audio never stops in
//   either direction (sampled every 250 ms through the restart), the door
//   reconnects with backoff and re-announces the call (`resume`), the page's
//   client reconnects by itself, and the hang-up from the page still reaches
//   the door through the new server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withEnv } from '../e2e/lib/fixture.mjs';
import { canUseNetns, sleep, waitFor } from '../e2e/lib/util.mjs';
import { buildConfig, daemonSkipReason, makeToken, startDaemon, waitForHttp, waitForLog, logField, Control } from '../e2e/lib/daemon.mjs';
import { expectDoorHears, TOL_HZ } from '../e2e/lib/checks.mjs';
import { wavTailDominant } from '../e2e/lib/wav.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const RELAY = path.join(here, 'relay_server.mjs');
const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)'
  : (daemonSkipReason() || (!fs.existsSync(path.join(here, 'node_modules/socket.io-client')) && 'npm ci in tests/socketio first'));

const DOOR_TONE = 600;
const MIC_TONE = 1000;
const NAMESPACE = '/doorbell';
const PING_INTERVAL_MS = 1000;
const PING_TIMEOUT_MS = 800;

/** Relay events (JSON lines on its stdout). */
function relayEvents(child, filter = {}) {
  const out = [];
  for (const line of child.lines) {
    let e;
    try { e = JSON.parse(line); } catch { continue; }
    if (Object.entries(filter).every(([k, v]) => e[k] === v)) out.push(e);
  }
  return out;
}

function doorConfig(env, { token, listen, control, recordFile, label }) {
  const file = env.file(`${label}.toml`);
  fs.writeFileSync(file, `${buildConfig({
    station: { id: 'door-1', name: 'Front door' },
    signaling: { mode: 'socketio', url: `ws://${listen}`, tokenFile: token.file, allowInsecureWs: true, reconnectInitialMs: 500, reconnectMaxMs: 2000 },
    ringTimeoutMs: 30000,
    buttons: [{ name: 'call', group: 'residents' }],
    audio: { source: `tone:${DOOR_TONE}`, recordFile },
    controlListen: control,
  })}
[signaling.socketio]
namespace = "${NAMESPACE}"
auth_field = "key"
`);
  return file;
}

test('a call through a real socket.io server: auth refusal, ping/pong, server restart mid-call', { skip, timeout: 150000 }, async () => {
  await withEnv('socketio_call', async (env) => {
    const listen = `${env.ns.addrA}:3000`;
    const origin = `http://${listen}`;
    const doorTok = makeToken(env, 'door-1');
    const flatTok = makeToken(env, 'flat-1a');
    const startRelay = async (label) => {
      const child = env.spawn(label, process.execPath, [RELAY, '--listen', listen, '--namespace', NAMESPACE,
        '--door-token-file', doorTok.file, '--answerer-token-file', flatTok.file,
        '--ping-interval', String(PING_INTERVAL_MS), '--ping-timeout', String(PING_TIMEOUT_MS)]);
      await waitFor(() => {
        if (child.exitInfo) throw new Error(`${label} exited ${JSON.stringify(child.exitInfo)}: ${child.lines.join('\n')}`);
        return relayEvents(child, { ev: 'listening' }).length > 0;
      }, { timeout: 10000, interval: 50, message: `${label} to listen` });
      return child;
    };
    let relay = await startRelay('relay-1');

    // ---- A wrong token: refused, logged with the server's reason, retried with backoff.
    const badTok = makeToken(env, 'door-wrong');
    const bad = startDaemon(env, doorConfig(env, { token: badTok, listen, control: '127.0.0.1:7082', recordFile: env.file('bad.wav'), label: 'door-wrong' }), { label: 'door-wrong' });
    await waitFor(() => relayEvents(relay, { ev: 'auth_refused' }).length >= 3, { timeout: 15000, message: 'three refused attempts' });
    const refusals = bad.lines.filter((l) => /signaling connection lost; reconnect in/.test(l));
    assert.ok(refusals.length >= 2, `the door logs each refusal:\n${bad.lines.join('\n')}`);
    assert.ok(refusals.every((l) => /refused us: connect_error: invalid key/.test(l)), `with the server's reason:\n${refusals.join('\n')}`);
    const delays = refusals.map((l) => Number(logField(l, 'delay_ms')));
    assert.ok(delays[0] >= 400 && delays[0] <= 600, `first retry after ~500 ms: ${delays}`);
    assert.ok(delays[1] > delays[0] * 1.3 && delays[1] <= 1200, `the delay grows: ${delays}`);
    const attempts = relayEvents(relay, { ev: 'auth_refused' }).map((e) => e.t);
    assert.ok(attempts[2] - attempts[1] > attempts[1] - attempts[0], `attempts spread out at the server: ${attempts}`);
    assert.ok(!bad.lines.some((l) => l.includes(badTok.token)), 'the token never reaches the log');
    assert.equal(relayEvents(relay, { ev: 'connect', role: 'door' }).length, 0, 'never admitted');
    await env.ns.kill(bad);

    // ---- The real door and the resident's page.
    const recordFile = env.file('played.wav');
    const door = startDaemon(env, doorConfig(env, { token: doorTok, listen, control: '127.0.0.1:7081', recordFile, label: 'door' }), { label: 'door' });
    const sockets = await env.ns.forward({ control: '127.0.0.1:7081' });
    await waitForHttp(sockets.control, '/state', door, 'the door control API');
    const control = new Control(sockets.control);
    await waitForLog(door, /Socket connected.*protocol="?socket\.io/, { timeout: 15000 });
    const browser = await env.browser({ micHz: MIC_TONE, secureOrigins: [origin] });
    const flat = await env.page(browser, `${origin}/?raw=1#token=${flatTok.token}&id=flat-1a&ns=${NAMESPACE}`, 'flat-1a');
    const answerer = () => flat.page.evaluate(() => {
      const a = window.answerer;
      return { state: a.state, connected: a.connected, connects: a.connects, callId: a.callId, firstAudioAtEpoch: a.firstAudioAtEpoch, pcState: a.pcState };
    });
    await waitFor(async () => (await answerer()).connected, { timeout: 15000, message: 'the page to join the server' });

    const fromLine = door.lines.length;
    const pressAt = Date.now();
    await control.press();
    const ringing = await waitFor(async () => { const a = await answerer(); return a.state === 'ringing' && a; },
      { timeout: 10000, interval: 50, message: 'the page to ring' });
    const doorCall = (await control.state()).call;
    assert.equal(ringing.callId, doorCall.call_id, 'page and door agree on the call id');
    const acceptAt = Date.now();
    assert.equal(await flat.page.evaluate(() => window.answerer.accept()), true);
    await waitForLog(door, /AUDIO CONNECTION ESTABLISHED/, { from: fromLine, timeout: 20000 });
    const pageHz = () => flat.page.evaluate(() => window.answerer.remoteDominantHz());
    const near = (hz, f) => hz !== null && Math.abs(hz - f) <= TOL_HZ;
    await waitFor(async () => near(await pageHz(), DOOR_TONE), { timeout: 15000, interval: 200, message: `the page to hear ${DOOR_TONE} Hz` });
    await expectDoorHears(recordFile, MIC_TONE, { timeout: 15000 });
    const firstAudio = (await answerer()).firstAudioAtEpoch;
    process.stderr.write(`socketio call: the page rang within ${acceptAt - pressAt} ms of the press (polled every 50 ms); `
      + `first audio at the page ${firstAudio - acceptAt} ms after accept\n`);

    // ---- Ping/pong: several ping intervals pass in the call; nobody is dropped.
    await sleep(4 * PING_INTERVAL_MS);
    assert.deepEqual(relayEvents(relay, { ev: 'disconnect' }), [], 'no client missed a pong');

    // ---- The server restarts mid-call.
    const doorConnects = () => door.lines.filter((l) => /Socket connected/.test(l)).length;
    const connectsBefore = doorConnects();
    const pageConnectsBefore = (await answerer()).connects;
    let lastDoorSeconds = -1;
    const samples = [];
    const sample = async () => {
      const page = await pageHz();
      let doorHz = null;
      let grew = false;
      try {
        const r = wavTailDominant(recordFile, 0.5);
        grew = r.totalSeconds > lastDoorSeconds;
        lastDoorSeconds = r.totalSeconds;
        doorHz = r.hz;
      } catch { /* the header may lag: counted as not heard */ }
      samples.push({ t: Date.now(), page, door: grew ? doorHz : null });
    };
    await sample();
    const stopAt = Date.now();
    await env.ns.kill(relay);
    const relayDownMs = 1500; // long enough for the door's first retry to fail
    for (let t = Date.now(); Date.now() - t < relayDownMs;) { await sleep(250); await sample(); }
    relay = await startRelay('relay-2');
    const restartedAt = Date.now();
    await waitFor(async () => {
      await sample();
      return doorConnects() > connectsBefore
        && relayEvents(relay, { ev: 'resume' }).length > 0
        && (await answerer()).connects > pageConnectsBefore;
    }, { timeout: 15000, interval: 250, message: 'the door and the page to rejoin the restarted server' });
    const rejoinedMs = Date.now() - restartedAt;
    for (let i = 0; i < 8; i++) { await sleep(250); await sample(); }

    const resume = relayEvents(relay, { ev: 'resume' })[0];
    assert.equal(resume.call_id, doorCall.call_id, 'the door re-announces its call');
    assert.equal(resume.answerer, 'flat-1a', 'with the answerer');
    const lost = door.lines.slice(fromLine).filter((l) => /signaling connection lost; reconnect in/.test(l));
    assert.ok(lost.length >= 1, 'the door logged the drop');
    const reconnectDelays = lost.map((l) => Number(logField(l, 'delay_ms')));
    assert.ok(reconnectDelays.every((d) => d >= 400 && d <= 2400), `reconnect delays within the backoff bounds: ${reconnectDelays}`);
    const pageMiss = samples.filter((x) => !near(x.page, DOOR_TONE));
    const doorMiss = samples.filter((x) => !near(x.door, MIC_TONE));
    process.stderr.write(`socketio restart: server down ${relayDownMs} ms, door and page rejoined ${rejoinedMs} ms after it came back; `
      + `door reconnect delays ${reconnectDelays} ms; ${samples.length} samples through the restart: `
      + `page missed the door ${pageMiss.length}, door missed the page ${doorMiss.length}\n`);
    assert.ok(samples.length >= 10, `enough samples: ${samples.length}`);
    assert.deepEqual(pageMiss, [], `the page heard ${DOOR_TONE} Hz all through the restart (stopped at ${stopAt})`);
    assert.deepEqual(doorMiss, [], `the door heard ${MIC_TONE} Hz all through the restart`);
    const st = await control.state();
    assert.equal(st.call.state, 'in_call', 'the call survived the restart');
    assert.equal(st.call.call_id, doorCall.call_id);

    // ---- Signaling works again: the page's hang-up reaches the door through the new server.
    assert.equal(await flat.page.evaluate(() => window.answerer.hangup()), true);
    await control.waitForNoCall(10000);
    assert.ok(relayEvents(relay, { ev: 'relay', event: 'hangup', to: 'door-1' }).length === 1, 'hang-up relayed by the new server');
    assert.ok(!door.lines.some((l) => l.includes(doorTok.token)), 'the token never reaches the log');
  });
});
