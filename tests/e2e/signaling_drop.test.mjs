// Signaling drops never end a call whose media flows: the hub runs as its own
// process, the door reaches it through a TCP relay; cutting the relay or
// restarting the hub mid-call keeps the audio going, the door reconnects with
// backoff (logged with delay_ms), sends `resume`, and hang-up still works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, sleep } from './lib/util.mjs';
import {
  daemonSkipReason, buildConfig, makeToken, startDaemon, waitForHttp, waitForLog, logField, Control,
} from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone } from './lib/answerer.mjs';
import { expectDoorHears } from './lib/checks.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

const RECONNECT_INITIAL_MS = 1000;
const RECONNECT_MAX_MS = 5000;
const JITTER = 0.2;
const DOOR_TONE = 600;
const MIC_TONE = 1000;
const RECONNECT_RE = /reconnect/i;

async function setupSplit(env) {
  const { ns } = env;
  const hubAddr = `${ns.addrA}:8080`;
  const relayAddr = `${ns.addrA}:9090`;
  const door = makeToken(env, 'door-1');
  const flat = makeToken(env, 'flat-1a');
  const hubConfig = env.file('hub.toml');
  fs.writeFileSync(hubConfig, buildConfig({
    // A hub-only process still validates [station]; give it an id of its own.
    station: { id: 'hub-1', name: 'Hub' },
    hub: {
      listen: hubAddr,
      answerers: [{ id: 'flat-1a', name: 'Flat 1A', file: flat.file, groups: ['residents'] }],
      doors: [{ id: 'door-1', name: 'Front door', file: door.file }],
    },
  }));
  const recordFile = env.file('played.wav');
  const doorConfig = env.file('door.toml');
  fs.writeFileSync(doorConfig, buildConfig({
    station: { id: 'door-1', name: 'Front door' },
    signaling: {
      mode: 'hub', url: `ws://${relayAddr}/ws`, tokenFile: door.file, allowInsecureWs: true,
      reconnectInitialMs: RECONNECT_INITIAL_MS, reconnectMaxMs: RECONNECT_MAX_MS, reconnectJitter: JITTER,
    },
    ringTimeoutMs: 30000,
    buttons: [{ name: 'call', group: 'residents' }],
    audio: { source: `tone:${DOOR_TONE}`, recordFile },
    controlListen: '127.0.0.1:7081',
    // intercomd=debug logs every message from the hub, among them `resumed`.
    logLevel: 'info,intercomd=debug',
  }));
  const startHub = (label) => startDaemon(env, hubConfig, { cmd: 'hub', label });
  let hub = startHub('hub');
  const relay = env.spawn('relay', process.execPath, [path.join(here, 'lib/relay.mjs'), relayAddr, hubAddr]);
  const sockets = await ns.forward({ control: '127.0.0.1:7081', hub: hubAddr });
  await waitForHttp(sockets.hub, '/', hub, 'the hub');
  await waitForLog(relay, /listening/, { timeout: 5000 });
  const doorProc = startDaemon(env, doorConfig, { cmd: 'run', label: 'door' });
  await waitForHttp(sockets.control, '/state', doorProc, 'the door control API');
  await waitForLog(doorProc, /Socket connected/, { timeout: 15000 });
  const origin = `http://${hubAddr}`;
  const browser = await env.browser({ micHz: MIC_TONE, secureOrigins: [origin] });
  const page = await env.page(browser, `${origin}/?raw=1#token=${flat.token}`, 'flat-1a');
  await waitForConnection(page);
  return {
    hubAddr, recordFile, relay, door: doorProc, page, control: new Control(sockets.control), sockets,
    get hub() { return hub; },
    async restartHub(label) {
      await env.ns.kill(hub, { signal: 'SIGTERM', graceMs: 3000 });
      hub = startHub(label);
      await waitForHttp(sockets.hub, '/', hub, 'the restarted hub');
      return hub;
    },
  };
}

async function establishCall(s) {
  await s.control.press();
  const ringing = await waitForState(s.page, 'ringing', 10000);
  await s.page.page.getByRole('button', { name: 'Accept the call' }).click();
  await waitForState(s.page, 'in_call', 20000);
  await s.control.waitForCallState('in_call', 10000);
  await expectRemoteTone(s.page, DOOR_TONE, { timeout: 15000 });
  await expectDoorHears(s.recordFile, MIC_TONE, { timeout: 15000 });
  return ringing.callId;
}

/** Reconnect lines after `from`, each with its delay_ms checked against the backoff bounds. */
function reconnectDelays(door, from) {
  const lines = door.lines.slice(from).filter((l) => RECONNECT_RE.test(l) && /delay_ms=/.test(l));
  const lo = RECONNECT_INITIAL_MS * (1 - JITTER);
  const hi = RECONNECT_MAX_MS * (1 + JITTER);
  const delays = lines.map((l) => Number(logField(l, 'delay_ms')));
  for (let i = 0; i < delays.length; i++) {
    assert.ok(Number.isFinite(delays[i]) && delays[i] >= lo && delays[i] <= hi,
      `reconnect delay ${delays[i]} ms outside [${lo}, ${hi}]: ${lines[i]}`);
  }
  return { lines, delays };
}

async function expectAudioBothWays(s, what) {
  await expectRemoteTone(s.page, DOOR_TONE, { timeout: 5000, count: 2 }).catch((err) => {
    err.message = `${what}: page audio: ${err.message}`;
    throw err;
  });
  await expectDoorHears(s.recordFile, MIC_TONE, { timeout: 5000 }).catch((err) => {
    err.message = `${what}: door audio: ${err.message}`;
    throw err;
  });
}

test('signaling drop: relay cut mid-call keeps audio, door reconnects with backoff and resumes', { skip, timeout: 180000 }, async () => {
  await withEnv('signaling_drop_relay', async (env) => {
    const s = await setupSplit(env);
    const callId = await establishCall(s);

    const mark = s.door.lines.length;
    process.kill(s.relay.pid, 'SIGUSR1');
    await waitForLog(s.relay, /cut/, { timeout: 3000 });
    // The door notices the loss and schedules reconnects.
    await waitForLog(s.door, /delay_ms=/, { from: mark, timeout: 10000 });
    // During the outage (about 6 s) audio keeps flowing both ways.
    const outageStart = Date.now();
    await expectAudioBothWays(s, 'during the relay outage');
    assert.equal((await s.control.state()).call.state, 'in_call', 'the call is not ended by the signaling drop');
    await sleep(Math.max(0, 6000 - (Date.now() - outageStart)));
    await expectAudioBothWays(s, 'late in the relay outage');
    const during = reconnectDelays(s.door, mark);
    assert.ok(during.delays.length >= 2, `at least two reconnect attempts during a 6 s outage: ${JSON.stringify(during.lines)}`);
    // Backoff: 1 s, 2 s, 4 s, 5 s, 5 s … each within ±jitter.
    during.delays.forEach((d, i) => {
      const nominal = Math.min(RECONNECT_MAX_MS, RECONNECT_INITIAL_MS * 2 ** i);
      assert.ok(d >= nominal * (1 - JITTER) - 1 && d <= nominal * (1 + JITTER) + 1,
        `reconnect attempt ${i + 1}: delay ${d} ms, expected ${nominal} ms ±${JITTER * 100}% (all: ${during.delays})`);
    });

    process.kill(s.relay.pid, 'SIGUSR2');
    const reconnected = await waitForLog(s.door, /Socket connected/, { from: mark, timeout: 15000 });
    // The door sent `resume`; the hub's `resumed` reply for this call arrives.
    await waitForLog(s.door, new RegExp(`kind="?resumed"?.*${callId}|${callId}.*kind="?resumed"?`), { from: reconnected.index, timeout: 10000 });
    const all = reconnectDelays(s.door, mark); // every logged delay within bounds
    process.stderr.write(`signaling_drop (relay cut): reconnect delays ${JSON.stringify(all.delays)} ms\n`);
    await expectAudioBothWays(s, 'after the reconnection');

    // Routing is back: hang-up from the door reaches the page.
    await s.control.hangup();
    const ended = await waitForState(s.page, 'idle', 5000);
    assert.equal(ended.message, 'Call ended');
    await s.control.waitForNoCall(10000);
    assert.equal(s.door.exitInfo, null);
    assert.equal(s.hub.exitInfo, null);
  });
});

test('signaling drop: hub restart mid-call keeps audio, door resumes, hang-up still works', { skip, timeout: 180000 }, async () => {
  await withEnv('signaling_drop_hub_restart', async (env) => {
    const s = await setupSplit(env);
    const callId = await establishCall(s);

    const mark = s.door.lines.length;
    await env.ns.kill(s.hub, { signal: 'SIGTERM', graceMs: 3000 });
    await waitForLog(s.door, /delay_ms=/, { from: mark, timeout: 30000 });
    await expectAudioBothWays(s, 'while the hub is down');
    assert.equal((await s.control.state()).call.state, 'in_call', 'the call is not ended when the hub goes away');
    await sleep(2000);

    const hub2 = await s.restartHub('hub-restarted');
    const reconnected = await waitForLog(s.door, /Socket connected/, { from: mark, timeout: 15000 });
    await waitForLog(s.door, new RegExp(`kind="?resumed"?.*${callId}|${callId}.*kind="?resumed"?`), { from: reconnected.index, timeout: 10000 });
    // The restarted hub rebuilt the call's routing from the door's `resume`.
    await waitForLog(hub2, new RegExp(`call ${callId} .*resumed`), { timeout: 5000 });
    const all = reconnectDelays(s.door, mark);
    process.stderr.write(`signaling_drop (hub restart): reconnect delays ${JSON.stringify(all.delays)} ms\n`);
    await waitForConnection(s.page, 15000);
    await expectAudioBothWays(s, 'after the hub restart');

    // The restarted hub learned the call from `resume`: the page's hang-up
    // reaches the door.
    await s.page.page.getByRole('button', { name: 'Hang up' }).click();
    await waitForState(s.page, 'idle', 5000);
    await s.control.waitForNoCall(10000);
    assert.equal(s.door.exitInfo, null);
    assert.equal(hub2.exitInfo, null);
  });
});
