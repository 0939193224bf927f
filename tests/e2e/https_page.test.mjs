// The answering page over HTTPS at the station's LAN address, as a phone
// opens it: a secure context (so the microphone is offered), signaling over
// WSS on the same listener, and a whole call with audio both ways and the
// door opened. Chromium trusts the test certificate only by its public key
// (--ignore-certificate-errors-spki-list), and a Chromium without that
// trust must refuse the page, so the trust is the one under test. Once with
// a certificate from files (a test CA and a leaf for the veth address) and
// once with the station's own self-signed certificate, trusted by the key
// the station logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone, waitForLog, logField } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, intercomSnapshot } from './lib/answerer.mjs';
import { expectDoorHears } from './lib/checks.mjs';
import { tlsPeerCertificate } from './lib/netns.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)'
  : !hasOpenssl() ? 'needs openssl' : daemonSkipReason();

const DOOR_TONE = 600; // [audio.sim] source
const MIC_TONE = 1000; // Chromium's fake microphone WAV
const PULSE_MS = 1000;

function hasOpenssl() {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const sh = (script, cwd) => execFileSync('sh', ['-ec', script], { cwd, encoding: 'utf8', timeout: 15000, stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * A test CA and a leaf certificate for `ip` signed by it (P-256), in `dir`.
 * Returns { cert (leaf + CA chain), key, spki (base64 SHA-256 of the leaf's key) }.
 */
function makeCertificates(dir, ip) {
  fs.writeFileSync(`${dir}/ca.cnf`, [
    '[req]', 'distinguished_name = dn', 'prompt = no', 'x509_extensions = v3',
    '[dn]', 'CN = intercomd e2e test CA',
    '[v3]', 'basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign,cRLSign', 'subjectKeyIdentifier = hash', '',
  ].join('\n'));
  fs.writeFileSync(`${dir}/leaf.ext`, [
    'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature', 'extendedKeyUsage = serverAuth',
    `subjectAltName = IP:${ip}`, 'authorityKeyIdentifier = keyid', '',
  ].join('\n'));
  sh([
    'openssl req -x509 -config ca.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 2 2>/dev/null',
    'openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj "/CN=door station" 2>/dev/null',
    'openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -set_serial 0x2a -days 2 -extfile leaf.ext -out leaf.crt 2>/dev/null',
    'openssl verify -CAfile ca.crt leaf.crt >/dev/null',
    'cat leaf.crt ca.crt > chain.crt',
  ].join('\n'), dir);
  const spki = sh('openssl x509 -in leaf.crt -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64', dir).trim();
  return { cert: `${dir}/chain.crt`, key: `${dir}/leaf.key`, spki };
}

/** base64 SHA-256 of a DER certificate's SubjectPublicKeyInfo. */
function spkiOf(der) {
  const spki = new crypto.X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

/** What the page and the browser say about the connection. */
function security(page) {
  return page.evaluate(() => {
    return {
      secure: window.isSecureContext,
      protocol: location.protocol,
      mediaDevices: !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia),
    };
  });
}

/**
 * The station's HTTPS, distrusted and then trusted by `spki`, and a call
 * through it. `mode` only names the run in the report.
 */
async function httpsCall(env, setup, daemon, control, sockets, { mode, spki, served }) {
  const origin = setup.origin;
  assert.match(origin, /^https:\/\/\d+\.\d+\.\d+\.\d+:8443$/, 'the page is opened by the hub\'s veth address');

  // ---- Without the key trusted, Chromium refuses the page.
  const untrusting = await env.browser({ name: 'untrusting' });
  const bare = await untrusting.newPage();
  const refused = await bare.goto(`${origin}/`, { timeout: 15000 }).then(() => null, (err) => err);
  assert.ok(refused, 'a Chromium without the key trusted must not load the page');
  assert.match(refused.message, /net::ERR_CERT_(AUTHORITY_INVALID|COMMON_NAME_INVALID|INVALID)/, refused.message);
  await untrusting.close();
  // The station says why, for the technician whose phone shows a warning.
  await waitForLog(daemon, /TLS handshake failed.* reason=received fatal alert/, { timeout: 5000 });

  // ---- Trusted by the key alone: the page, then its WebSocket, on WSS.
  const browser = await env.browser({ micHz: MIC_TONE, spkiList: [spki], name: 'flat' });
  const page = await browser.newPage();
  const flat = { page, console: [], label: 'flat-1a' };
  env.pages.push(flat);
  page.on('console', (m) => flat.console.push(`[flat-1a] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => flat.console.push(`[flat-1a] pageerror: ${e.message}`));
  page.setDefaultTimeout(15000);
  const wsSeen = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), welcome: false, closed: false };
    wsSeen.push(s);
    ws.on('framereceived', (f) => { if (typeof f.payload === 'string' && /"type"\s*:\s*"welcome"/.test(f.payload)) s.welcome = true; });
    ws.on('close', () => { s.closed = true; });
  });
  const response = await page.goto(`${origin}/?raw=1#token=${setup.answerers[0].token}`, { timeout: 15000 });
  assert.equal(response.status(), 200);
  const details = await response.securityDetails();
  assert.ok(details, 'the page came over TLS');
  await waitForConnection(flat);
  const sec = await security(page);
  assert.equal(sec.secure, true, `window.isSecureContext: ${JSON.stringify(sec)}`);
  assert.equal(sec.protocol, 'https:');
  assert.equal(sec.mediaDevices, true, 'the microphone API is offered');
  assert.equal(wsSeen.length, 1, `one signaling socket: ${JSON.stringify(wsSeen)}`);
  assert.equal(wsSeen[0].url, `wss://${setup.hubAddr}/ws`);
  await waitFor(() => wsSeen[0].welcome, { timeout: 5000, message: 'the welcome frame on the wss socket' });

  // ---- A whole call.
  const pressedAt = Date.now();
  await control.press();
  const ringing = await waitForState(flat, 'ringing', 10000);
  const ringMs = Date.now() - pressedAt;
  assert.equal(ringing.doorNameShown, 'Front door');
  await page.getByRole('button', { name: 'Accept the call' }).click();
  const acceptedAt = Date.now();
  await waitForState(flat, 'in_call', 20000);
  await control.waitForCallState('in_call', 10000);
  const pageHz = await expectRemoteTone(flat, DOOR_TONE, { timeout: 15000 });
  const doorHz = await expectDoorHears(setup.recordFile, MIC_TONE, { timeout: 15000 });
  const heardMs = Date.now() - acceptedAt;
  const snap = await intercomSnapshot(page);
  assert.ok(snap.firstAudioAtEpoch > 0, 'the page saw the first audio packet');
  assert.equal(snap.micRequests, 1, 'the page asked for the microphone');
  assert.equal(await page.evaluate(() => window.intercom.listenOnly), false, 'answered with the microphone');

  const openButton = page.getByRole('button', { name: 'Open the door' });
  await waitFor(async () => openButton.isEnabled(), { timeout: 10000, message: 'Open door enabled (data channel open)' });
  await openButton.click();
  const granted = await waitFor(async () => {
    const r = await page.evaluate(() => window.intercom.lastDoorResult);
    return r && r.granted ? r : null;
  }, { timeout: 5000, interval: 50, message: 'the door to grant the open' });
  assert.equal(granted.pulse_ms, PULSE_MS);
  await waitFor(async () => (await control.state()).relay_energised, { timeout: 2000, interval: 50, message: 'the relay pulse' });
  const audit = await waitForLog(daemon, /AUDIT="?door_open.*granted=true/, { timeout: 5000 });
  assert.equal(logField(audit.line, 'call_id'), ringing.callId);
  assert.equal(logField(audit.line, 'source'), 'data_channel');

  await page.getByRole('button', { name: 'Hang up' }).click();
  await waitForState(flat, 'idle', 5000);
  await control.waitForNoCall(10000);
  assert.equal(wsSeen.length, 1, 'the page kept its one signaling socket through the call');
  assert.equal(wsSeen[0].closed, false);
  assert.equal(daemon.exitInfo, null, 'the daemon is still running');
  const last = (r) => r.slice(-3).map((x) => (typeof x === 'number' ? x : x.hz));
  process.stderr.write(`https_page ${mode}: ${details.protocol} (${details.subjectName || 'no CN'}), ` +
    `served SHA-256 ${served.fingerprint256.slice(0, 23)}…; ` +
    `press→ring ${ringMs} ms, accept→both tones heard ${heardMs} ms; page heard ${JSON.stringify(last(pageHz))} Hz, ` +
    `door heard ${JSON.stringify(last(doorHz))} Hz; door opened (pulse ${granted.pulse_ms} ms)\n`);
}

test('https page on the LAN address, certificate from files trusted by its key: secure context, wss, call, door opened', { skip, timeout: 90000 }, async () => {
  await withEnv('https_page_files', async (env) => {
    const certDir = env.file('certs');
    fs.mkdirSync(certDir);
    const certs = makeCertificates(certDir, env.ns.addrA);
    const setup = standaloneSetup(env, {
      tone: DOOR_TONE,
      tls: ['mode = "files"', `cert_file = ${JSON.stringify(certs.cert)}`, `key_file = ${JSON.stringify(certs.key)}`],
    });
    fs.appendFileSync(setup.configFile, `\n[door]\npulse_ms = ${PULSE_MS}\n`);
    const { daemon, control, sockets } = await bringUpStandalone(env, setup);
    const logged = (await waitForLog(daemon, /hub certificate from /, { timeout: 5000 })).line;
    const served = await tlsPeerCertificate(sockets.hub);
    assert.equal(served.alpn, 'http/1.1');
    assert.equal(spkiOf(served.raw), certs.spki, 'the hub serves the leaf from cert_file');
    assert.equal(logField(logged, 'spki_sha256'), certs.spki, `the station logs the leaf's key: ${logged}`);
    assert.equal(logField(logged, 'fingerprint_sha256'), served.fingerprint256, `the station logs the served certificate: ${logged}`);
    assert.equal(served.issuerCertificate?.subject?.CN, 'intercomd e2e test CA', 'the chain from cert_file is served');
    await httpsCall(env, setup, daemon, control, sockets, { mode: 'files', spki: certs.spki, served });
  });
});

test('https page on the LAN address, self-signed certificate trusted by the key the station logged: secure context, wss, call, door opened', { skip, timeout: 90000 }, async () => {
  await withEnv('https_page_self_signed', async (env) => {
    const setup = standaloneSetup(env, { tone: DOOR_TONE, tls: ['mode = "self_signed"'] });
    fs.appendFileSync(setup.configFile, `\n[door]\npulse_ms = ${PULSE_MS}\n`);
    const { daemon, control, sockets } = await bringUpStandalone(env, setup);
    const logged = (await waitForLog(daemon, /hub certificate self-signed/, { timeout: 5000 })).line;
    const spki = logField(logged, 'spki_sha256');
    const fingerprint = logField(logged, 'fingerprint_sha256');
    assert.match(spki || '', /^[A-Za-z0-9+/]{43}=$/, `spki_sha256 in: ${logged}`);
    assert.match(fingerprint || '', /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, `fingerprint_sha256 in: ${logged}`);
    const served = await tlsPeerCertificate(sockets.hub);
    assert.equal(fingerprint, served.fingerprint256, 'the logged fingerprint is the served certificate\'s');
    assert.equal(spkiOf(served.raw), spki, 'the logged key hash is the served certificate\'s');
    const names = (served.subjectaltname || '').split(', ');
    assert.ok(names.includes(`IP Address:${env.ns.addrA}`), `the certificate names the veth address: ${served.subjectaltname}`);
    assert.ok(fs.existsSync(env.file('hub-state/tls/self-signed.crt')), 'kept in hub.state_dir');
    await httpsCall(env, setup, daemon, control, sockets, { mode: 'self_signed', spki, served });
  });
});
