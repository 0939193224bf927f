// Running intercomd inside a test namespace: configuration, tokens, the
// simulated-hardware control API, and its log.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { httpRequest, tlsPeerCertificate } from './netns.mjs';
import { randomToken, sleep, waitFor } from './util.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../../..');
export const DAEMON_BIN = process.env.INTERCOMD_BIN || path.join(REPO, 'target/debug/intercomd');

export function daemonAvailable() {
  try {
    fs.accessSync(DAEMON_BIN, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Skip reason for node:test when the daemon binary is missing, else false. */
export function daemonSkipReason() {
  return daemonAvailable() ? false : `intercomd binary not found at ${DAEMON_BIN} (build it or set INTERCOMD_BIN)`;
}

/** Write a token to a file (0600) and return { id, token, file }. */
export function makeToken(env, id) {
  const token = randomToken();
  const file = env.file(`${id}.token`);
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return { id, token, file };
}

const q = (s) => JSON.stringify(String(s)); // TOML basic strings share JSON escaping for our inputs

/**
 * Build a TOML configuration. Options:
 *  station: { id, name }
 *  signaling: { mode: 'standalone'|'hub', url, tokenFile, reconnectInitialMs, reconnectMaxMs, reconnectJitter }
 *  hub: { listen, publicUrl, stateDir, tls, push, answerers: [{id,name,file,groups,callDoor,quietHours}], doors: [{id,name,file,groups}] }
 *    (tls: lines of [hub.tls], which may go on with a [hub.tls.acme] table;
 *    push: lines of [hub.push], or { subject, caFile } to turn it on;
 *    quietHours: the answerer's quiet_hours windows, e.g. ['daily 00:00-24:00'])
 *  ringTimeoutMs, buttons: [{name, group}],
 *  audio: { source, recordFile, echoPath } for the simulated backend, or
 *         { backend: 'alsa', captureDevice, playbackDevice, pacing };
 *         either with processing: false to switch the capture processing off
 *  controlListen, logLevel
 */
export function buildConfig(o) {
  const lines = [];
  if (o.station) {
    lines.push('[station]', `id = ${q(o.station.id)}`, `name = ${q(o.station.name)}`, '');
  }
  if (o.signaling) {
    const s = o.signaling;
    lines.push('[signaling]', `mode = ${q(s.mode)}`);
    if (s.url) lines.push(`url = ${q(s.url)}`);
    if (s.tokenFile) lines.push(`token_file = ${q(s.tokenFile)}`);
    // Plain ws:// across the test's own namespaces, said explicitly.
    if (s.allowInsecureWs) lines.push('allow_insecure_ws = true');
    lines.push(`reconnect_initial_ms = ${s.reconnectInitialMs ?? 1000}`, `reconnect_max_ms = ${s.reconnectMaxMs ?? 5000}`);
    if (s.reconnectJitter !== undefined) lines.push(`reconnect_jitter = ${s.reconnectJitter}`);
    lines.push('');
  }
  if (o.hub) {
    lines.push('[hub]', `listen = ${q(o.hub.listen)}`);
    if (o.hub.publicUrl) lines.push(`public_url = ${q(o.hub.publicUrl)}`);
    if (o.hub.stateDir) lines.push(`state_dir = ${q(o.hub.stateDir)}`);
    lines.push('');
    // Plain HTTP unless a test asks for TLS (o.hub.tls: lines of [hub.tls]).
    lines.push('[hub.tls]', ...(o.hub.tls || ['mode = "off"']), '');
    if (Array.isArray(o.hub.push)) lines.push('[hub.push]', ...o.hub.push, '');
    else if (o.hub.push) {
      lines.push('[hub.push]', 'enabled = true');
      if (o.hub.push.subject) lines.push(`subject = ${q(o.hub.push.subject)}`);
      if (o.hub.push.caFile) lines.push(`ca_file = ${q(o.hub.push.caFile)}`);
      lines.push('');
    }
    for (const a of o.hub.answerers || []) {
      lines.push('[[hub.answerers]]', `id = ${q(a.id)}`, `name = ${q(a.name)}`, `token_file = ${q(a.file)}`,
        `groups = [${(a.groups || ['residents']).map(q).join(', ')}]`);
      if (a.callDoor) lines.push('call_door = true');
      if (a.quietHours) lines.push(`quiet_hours = [${a.quietHours.map(q).join(', ')}]`);
      lines.push('');
    }
    // A door may ring the groups it names (default: every answerer's).
    const allGroups = [...new Set((o.hub.answerers || []).flatMap((a) => a.groups || ['residents']))];
    for (const d of o.hub.doors || []) {
      lines.push('[[hub.doors]]', `id = ${q(d.id)}`, `name = ${q(d.name)}`, `token_file = ${q(d.file)}`,
        `groups = [${(d.groups || allGroups).map(q).join(', ')}]`, '');
    }
  }
  if (o.ringTimeoutMs !== undefined) lines.push('[call]', `ring_timeout_ms = ${o.ringTimeoutMs}`, '');
  for (const b of o.buttons || []) lines.push('[[buttons]]', `name = ${q(b.name)}`, `group = ${q(b.group)}`, '');
  if (o.audio) {
    const a = o.audio;
    lines.push('[audio]', `backend = ${q(a.backend || 'sim')}`);
    if (a.processing === false) {
      for (const k of ['echo_cancellation', 'auto_gain_control', 'high_pass_filter', 'noise_suppression']) lines.push(`${k} = false`);
    }
    lines.push('');
    if (a.backend === 'alsa') {
      lines.push('[audio.alsa]', `capture_device = ${q(a.captureDevice)}`, `playback_device = ${q(a.playbackDevice)}`,
        `pacing = ${q(a.pacing || 'device')}`, '');
    } else {
      lines.push('[audio.sim]', `source = ${q(a.source)}`);
      if (a.recordFile) lines.push(`record_file = ${q(a.recordFile)}`);
      if (a.echoPath) lines.push(`echo_path = ${q(a.echoPath)}`);
      lines.push('');
    }
  }
  if (o.controlListen) {
    lines.push('[hardware]', 'backend = "sim"', '', '[hardware.sim]', `control_listen = ${q(o.controlListen)}`, 'stdin = false', '');
  }
  if (o.iceBindIps) lines.push('[ice]', `bind_ips = [${o.iceBindIps.map(q).join(', ')}]`, '');
  lines.push('[log]', 'target = "stderr"', `level = ${q(o.logLevel || 'info')}`, '');
  return lines.join('\n');
}

/**
 * A door station with its built-in hub (standalone), as most tests use it.
 * `tls`: lines of [hub.tls] (default plain HTTP); with any mode but "off"
 * the hub serves HTTPS on port 8443 with its state in the test's directory.
 * `push`: { subject, caFile } turns Web Push on ([hub.push]); answerers may
 * carry `quietHours`.
 * Returns { config, configFile, tokens: {door, answerers:[...]}, hubAddr, origin, tls, recordFile }.
 */
export function standaloneSetup(env, { answerers = [{ id: 'flat-1a', name: 'Flat 1A' }], tone = 600, ringTimeoutMs = 30000, audio, publicUrl, tls, push, hubHost } = {}) {
  const https = !!tls && !tls.some((l) => /^\s*mode\s*=\s*"off"/.test(l));
  // hubHost '127.0.0.1': the namespace's loopback, a secure context for the
  // browser without any switch (service workers, push).
  const hubAddr = `${hubHost || env.ns.addrA}:${https ? 8443 : 8080}`;
  const recordFile = env.file('played.wav');
  const tokens = answerers.map((a) => ({ ...a, ...makeToken(env, a.id), groups: a.groups || ['residents'] }));
  const config = buildConfig({
    station: { id: 'door-1', name: 'Front door' },
    signaling: { mode: 'standalone' },
    hub: { listen: hubAddr, publicUrl, tls, push, stateDir: env.file('hub-state'), answerers: tokens },
    ringTimeoutMs,
    buttons: [{ name: 'call', group: 'residents' }],
    audio: audio || { source: `tone:${tone}`, recordFile },
    controlListen: '127.0.0.1:7081',
    iceBindIps: process.env.E2E_DOOR_BIND ? [env.ns[process.env.E2E_DOOR_BIND]] : undefined,
  });
  const configFile = env.file('intercomd.toml');
  fs.writeFileSync(configFile, config);
  return { config, configFile, answerers: tokens, hubAddr, origin: `${https ? 'https' : 'http'}://${hubAddr}`, https, recordFile };
}

/** Start `intercomd <cmd> --config <file>` inside the namespace. */
export function startDaemon(env, configFile, { cmd = 'run', label = 'intercomd', extraEnv = {} } = {}) {
  const child = env.spawn(label, DAEMON_BIN, [cmd, '--config', configFile], {
    env: { RUST_BACKTRACE: '1', NO_COLOR: '1', ...extraEnv },
  });
  return child;
}

/** Wait until a TCP service inside the namespace accepts HTTP through `sock`. */
export async function waitForHttp(sock, urlPath, child, what, timeout = 15000) {
  return waitFor(async () => {
    if (child && child.exitInfo) throw new Error(`${child.label} exited ${JSON.stringify(child.exitInfo)} before ${what} was up`);
    try {
      const r = await httpRequest(sock, 'GET', urlPath, { timeout: 1000 });
      return r.status < 500 ? r : null;
    } catch (err) {
      if (child && child.exitInfo) throw err;
      return null;
    }
  }, { timeout, interval: 100, message: what });
}

export class Control {
  constructor(sock) { this.sock = sock; }

  async post(urlPath) {
    const r = await httpRequest(this.sock, 'POST', urlPath, { timeout: 5000, body: '{}', headers: { 'content-type': 'application/json' } });
    if (r.status < 200 || r.status >= 300) throw new Error(`POST ${urlPath}: HTTP ${r.status} ${r.body}`);
    return r;
  }

  press(button) { return this.post(button ? `/press?button=${encodeURIComponent(button)}` : '/press'); }

  hangup() { return this.post('/hangup'); }

  async state() {
    const r = await httpRequest(this.sock, 'GET', '/state', { timeout: 5000 });
    if (r.status !== 200) throw new Error(`GET /state: HTTP ${r.status} ${r.body}`);
    try {
      return JSON.parse(r.body);
    } catch {
      throw new Error(`GET /state: not JSON: ${r.body.slice(0, 200)}`);
    }
  }

  /**
   * Wait until the door has no call: state "idle", or "ended" (the call
   * machine's terminal state, which /state keeps showing until the next call).
   */
  waitForNoCall(timeout = 10000) {
    return this.waitForCallState(['idle', 'ended'], timeout);
  }

  async waitForCallState(want, timeout = 10000) {
    const wanted = Array.isArray(want) ? want : [want];
    let last;
    try {
      return await waitFor(async () => {
        last = await this.state();
        return wanted.includes(last?.call?.state) ? last : null;
      }, { timeout, interval: 100, message: `door call state ${wanted.join('|')}` });
    } catch (err) {
      err.message += `; last /state: ${JSON.stringify(last)}`;
      throw err;
    }
  }
}

/** Wait for a log line matching `re` at index >= from; returns { index, line }. */
export async function waitForLog(child, re, { from = 0, timeout = 10000 } = {}) {
  const found = await waitFor(() => {
    for (let i = from; i < child.lines.length; i++) if (re.test(child.lines[i])) return { index: i, line: child.lines[i] };
    if (child.exitInfo) throw new Error(`${child.label} exited ${JSON.stringify(child.exitInfo)}`);
    return null;
  }, { timeout, interval: 50, message: `${child.label} log line matching ${re}` });
  return found;
}

/** Timestamp (ms since epoch) at the start of a tracing text-format line, or null. */
export function logTime(line) {
  const m = /^\s*(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)/.exec(line);
  if (!m) return null;
  let ts = m[1];
  // Date.parse keeps milliseconds only; keep sub-millisecond digits ourselves.
  const frac = /\.(\d+)/.exec(ts);
  let extra = 0;
  if (frac && frac[1].length > 3) {
    extra = Number(`0.${frac[1].slice(3)}`);
    ts = ts.replace(/\.(\d+)/, `.${frac[1].slice(0, 3)}`);
  }
  if (!/(Z|[+-]\d{2}:?\d{2})$/.test(ts)) ts += 'Z';
  const t = Date.parse(ts);
  return Number.isFinite(t) ? t + extra : null;
}

/** Value of a structured field `name=value` in a tracing text line. */
export function logField(line, name) {
  const m = new RegExp(`(?:^|\\s)${name}=("(?:[^"\\\\]|\\\\.)*"|\\S+)`).exec(line);
  if (!m) return null;
  return m[1].startsWith('"') ? JSON.parse(m[1]) : m[1];
}

/** Wait until a TLS service inside the namespace completes a handshake through `sock`. */
export async function waitForTls(sock, child, what, timeout = 15000) {
  return waitFor(async () => {
    if (child && child.exitInfo) throw new Error(`${child.label} exited ${JSON.stringify(child.exitInfo)} before ${what} was up`);
    try {
      return await tlsPeerCertificate(sock, { timeout: 1000 });
    } catch (err) {
      if (child && child.exitInfo) throw err;
      return null;
    }
  }, { timeout, interval: 100, message: what });
}

/**
 * Standard bring-up of a standalone door: start it, forward its control API
 * and hub into the test process, wait for both. Returns { daemon, control, sockets }.
 */
export async function bringUpStandalone(env, setup, { extraEnv } = {}) {
  const daemon = startDaemon(env, setup.configFile, { extraEnv });
  const sockets = await env.ns.forward({ control: '127.0.0.1:7081', hub: setup.hubAddr });
  await waitForHttp(sockets.control, '/state', daemon, 'the simulated-hardware control API');
  if (setup.https) await waitForTls(sockets.hub, daemon, 'the hub serving HTTPS');
  else await waitForHttp(sockets.hub, '/', daemon, 'the hub serving the answering page');
  return { daemon, control: new Control(sockets.control), sockets };
}

export { sleep };
