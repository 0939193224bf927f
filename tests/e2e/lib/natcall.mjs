// A call through the NAT rig (lib/natrig.mjs): `intercomd hub` and coturn in
// the public namespace, the door station (signaling.mode = "hub") behind one
// NAT, the resident's Chromium behind the other.
import fs from 'node:fs';
import { buildConfig, makeToken, startDaemon, waitForHttp, waitForLog, Control } from './daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone } from './answerer.mjs';
import { expectDoorHears } from './checks.mjs';

export const DOOR_TONE = 600;
export const MIC_TONE = 1000;
const HUB_PORT = 443; // the hub's own address, so "only TCP 443" still reaches it

const q = (s) => JSON.stringify(String(s));

/**
 * ICE server sets for the rig's coturn. `kinds`: any of stun, udp, tcp, tls.
 */
export function turnServers(rig, kinds) {
  const t = rig.addr.turn;
  const out = [];
  if (kinds.includes('stun')) out.push({ urls: [`stun:${t}:3478`] });
  const auth = rig.turn.secretFile
    ? { secretFile: rig.turn.secretFile }
    : { username: rig.turn.user, credentialFile: rig.turn.passwordFile };
  if (kinds.includes('udp')) out.push({ urls: [`turn:${t}:3478?transport=udp`], ...auth });
  if (kinds.includes('tcp')) out.push({ urls: [`turn:${t}:3478?transport=tcp`], ...auth });
  if (kinds.includes('tls')) out.push({ urls: [`turns:${t}:443?transport=tcp`], ...auth });
  return out;
}

function iceSection(servers, { relayOnly = false, caFile, receivingTimeoutMs } = {}) {
  const lines = ['[ice]'];
  if (relayOnly) lines.push('transport_policy = "relay"');
  if (caFile) lines.push(`turn_ca_file = ${q(caFile)}`);
  if (receivingTimeoutMs) lines.push(`receiving_timeout_ms = ${receivingTimeoutMs}`);
  lines.push('');
  for (const s of servers) {
    lines.push('[[ice.servers]]', `urls = [${s.urls.map(q).join(', ')}]`);
    if (s.username) lines.push(`username = ${q(s.username)}`, `credential_file = ${q(s.credentialFile)}`);
    if (s.secretFile) lines.push(`secret_file = ${q(s.secretFile)}`, 'credential_ttl_s = 600');
    lines.push('');
  }
  return lines.join('\n');
}

/**
 * Hub, door and the resident's page, connected and idle. Options:
 *  servers: ICE servers the hub hands out (and the door also has configured)
 *  relayOnly: the door's ice.transport_policy = "relay"
 *  doorExtra: extra TOML appended to the door's configuration
 *  pageInit: a script (function) run in the resident's page before its own
 *    (Playwright's addInitScript), for test probes
 */
export async function bringUpNatCall(rig, {
  servers, relayOnly = false, doorExtra = '', receivingTimeoutMs = 30000, logLevel = 'info',
  extraDoors = [], pageParams = 'raw=1', doorUid, pageInit,
}) {
  const hubAddr = `${rig.addr.hub}:${HUB_PORT}`;
  const origin = `http://${hubAddr}`;
  const door = makeToken(rig, 'door-1');
  const flat = makeToken(rig, 'flat-1a');
  const extra = extraDoors.map((d) => ({ ...d, ...makeToken(rig, d.id) }));
  const hubConfig = rig.file('hub.toml');
  fs.writeFileSync(hubConfig, `${buildConfig({
    station: { id: 'hub-1', name: 'Hub' },
    hub: {
      listen: hubAddr,
      answerers: [{ id: 'flat-1a', name: 'Flat 1A', file: flat.file, groups: ['residents'] }],
      doors: [{ id: 'door-1', name: 'Front door', file: door.file }, ...extra],
    },
  })}\n${iceSection(servers)}`);
  const recordFile = rig.file('played.wav');
  const doorConfig = rig.file('door.toml');
  fs.writeFileSync(doorConfig, `${buildConfig({
    station: { id: 'door-1', name: 'Front door' },
    signaling: { mode: 'hub', url: `ws://${hubAddr}/ws`, tokenFile: door.file, allowInsecureWs: true },
    ringTimeoutMs: 30000,
    buttons: [{ name: 'call', group: 'residents' }],
    audio: { source: `tone:${DOOR_TONE}`, recordFile },
    controlListen: '127.0.0.1:7081',
    logLevel,
  })}\n${iceSection(servers, { relayOnly, caFile: rig.turn.ca, receivingTimeoutMs })}\n${doorExtra}`);
  const hub = startDaemonIn(rig, 'pub', hubConfig, 'hub', 'hub');
  const hubSock = await rig.ns.pub.forward({ hub: hubAddr });
  await waitForHttp(hubSock.hub, '/', hub, 'the hub');
  if (doorUid !== undefined) {
    // The station as its own unprivileged user, as a service unit runs it.
    fs.chmodSync(rig.dir, 0o711);
    for (const f of [doorConfig, door.file, rig.turn.passwordFile, rig.turn.ca]) fs.chownSync(f, doorUid, doorUid);
    fs.writeFileSync(recordFile, '');
    fs.chownSync(recordFile, doorUid, doorUid);
  }
  const doorProc = startDaemonIn(rig, 'door', doorConfig, 'run', 'door', doorUid);
  const doorSock = await rig.ns.door.forward({ control: '127.0.0.1:7081' });
  await waitForHttp(doorSock.control, '/state', doorProc, 'the door control API');
  await waitForLog(doorProc, /Socket connected/, { timeout: 15000 });
  // A probe in the page loads its worklet from a blob: URL, which the
  // page's CSP refuses: such a page runs without it (lib/browser.mjs).
  const browser = await rig.browser('res', { micHz: MIC_TONE, secureOrigins: [origin], name: 'flat', bypassCSP: !!pageInit });
  if (pageInit) await browser.addInitScript(pageInit);
  const page = await rig.page(browser, `${origin}/?${pageParams}#token=${flat.token}`, 'flat-1a');
  await waitForConnection(page);
  return {
    hub, door: doorProc, page, recordFile, origin, hubAddr, tokens: { door, flat, extra },
    control: new Control(doorSock.control),
  };
}

function startDaemonIn(rig, role, configFile, cmd, label, uid) {
  // startDaemon wants an env with spawn(label, cmd, args, opts).
  const asUser = uid === undefined ? [] : ['--reuid', String(uid), '--regid', String(uid), '--clear-groups', '--'];
  const env = {
    spawn: (l, c, a, o) => (asUser.length ? rig.spawn(role, l, '/usr/bin/setpriv', [...asUser, c, ...a], o) : rig.spawn(role, l, c, a, o)),
  };
  return startDaemon(env, configFile, { cmd, label });
}

/** Press, accept, audio both ways by content. Returns { callId, established }. */
export async function callWithAudio(s, { timeout = 20000 } = {}) {
  const from = s.door.lines.length;
  await s.control.press();
  const ringing = await waitForState(s.page, 'ringing', 10000);
  await s.page.page.getByRole('button', { name: 'Accept the call' }).click();
  await waitForState(s.page, 'in_call', timeout);
  const established = await waitForLog(s.door, /AUDIO CONNECTION ESTABLISHED/, { from, timeout });
  await expectRemoteTone(s.page, DOOR_TONE, { timeout });
  await expectDoorHears(s.recordFile, MIC_TONE, { timeout });
  return { callId: ringing.callId, established: established.line };
}

/**
 * Candidate types and protocols of the selected pair in an
 * `AUDIO CONNECTION ESTABLISHED … selected_pair=…` line.
 */
export function selectedPair(line) {
  const m = /\(local\)(.*?)<->\s*\(remote\)(.*)$/.exec(line);
  if (!m) return null;
  const typ = (s) => (/\b(host|srflx|prflx|relay)\b/.exec(s) || [])[1] || null;
  return { local: typ(m[1]), remote: typ(m[2]), localText: m[1].trim(), remoteText: m[2].trim() };
}
