// ACME in a browser: the station's hub gets its certificate from Debian's
// `pebble` (a test-only ACME server) by TLS-ALPN-01 on its own HTTPS port,
// and headless Chromium, trusting pebble's root through an NSS database of
// its own (no certificate-error switches), loads the answering page over it
// and signs in. A renewal swaps the certificate under the open page: its
// WebSocket stays the same connection and still rings, while new
// connections get the new certificate (a reload may still ride a kept-alive
// connection on the old one). A restart reuses the stored ACME account.
//
// Everything runs inside the test's namespace: pebble and its DNS server
// (`pebble-challtestsrv`, answering every name with the hub's address) on
// loopback, the daemon's hub on the veth address, Chromium mapping the
// domain to that address with --host-resolver-rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason, buildConfig, makeToken, startDaemon, waitForHttp, waitForLog, logField, logTime, Control } from './lib/daemon.mjs';
import { waitForConnection, waitForState, pageEvents } from './lib/answerer.mjs';
import { openPage } from './lib/browser.mjs';

const DOMAIN = 'door.intercom.test';
const HUB_PORT = 8443;
// Pebble inside the namespace, on loopback.
const PEBBLE_API = 14000;
const PEBBLE_MGMT = 15000;
const DNS_PORT = 8053;
const DNS_MGMT = 8055;
const CHECK_INTERVAL_MS = 5000;

function have(cmd) {
  return (process.env.PATH || '').split(':').some((d) => d && fs.existsSync(path.join(d, cmd)));
}

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)'
  : !have('pebble') || !have('pebble-challtestsrv') ? 'pebble is not installed (apt-get install pebble)'
    : daemonSkipReason();

const openssl = (args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 15000 });

/** A throwaway CA and a leaf for 127.0.0.1 for pebble's own HTTPS (the package ships none). */
function pebbleHttpsCert(dir) {
  const f = (n) => path.join(dir, n);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', f('https-ca.key'), '-out', f('https-ca.pem'), '-subj', '/CN=intercomd e2e ACME server CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', f('https.key'), '-out', f('https.csr'), '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(f('https.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n'
    + 'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(['x509', '-req', '-in', f('https.csr'), '-CA', f('https-ca.pem'), '-CAkey', f('https-ca.key'),
    '-CAcreateserial', '-days', '2', '-extfile', f('https.ext'), '-out', f('https.pem')]);
  return { ca: f('https-ca.pem'), cert: f('https.pem'), key: f('https.key') };
}

function startPebble(env, certs) {
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${PEBBLE_API}`,
      managementListenAddress: `127.0.0.1:${PEBBLE_MGMT}`,
      certificate: certs.cert,
      privateKey: certs.key,
      httpPort: 5002, // HTTP-01: unused
      tlsPort: HUB_PORT, // TLS-ALPN-01 is validated on the hub's port
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
      certificateValidityPeriod: 3600,
    },
  };
  const configFile = env.file('pebble-config.json');
  fs.writeFileSync(configFile, JSON.stringify(config));
  // DNS only: every A query gets the hub's address and no AAAA (pebble dials
  // the first address it gets, IPv6 first).
  const dns = env.spawn('challtestsrv', 'pebble-challtestsrv', [
    '-dns01', `127.0.0.1:${DNS_PORT}`, '-management', `127.0.0.1:${DNS_MGMT}`,
    '-http01', '', '-https01', '', '-tlsalpn01', '', '-defaultIPv4', env.ns.addrA, '-defaultIPv6', '']);
  const pebble = env.spawn('pebble', 'pebble', ['-config', configFile, '-dnsserver', `127.0.0.1:${DNS_PORT}`], {
    // No random validation delays; every order validated anew, so each
    // renewal answers a challenge on the hub's listener again.
    env: { PEBBLE_VA_NOSLEEP: '1', PEBBLE_AUTHZREUSE: '0' },
  });
  return { dns, pebble, directoryUrl: `https://127.0.0.1:${PEBBLE_API}/dir` };
}

/** TLS to a service in the namespace through a forwarded Unix socket. */
function tlsThrough(sockPath, { ca, servername }) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ socket: net.connect(sockPath), ca, servername, ALPNProtocols: ['http/1.1'] }, () => resolve(s));
    s.setTimeout(5000, () => s.destroy(new Error(`TLS to ${servername}: timeout`)));
    s.once('error', reject);
  });
}

/** The leaf a fresh, verifying TLS connection gets from the hub. */
async function servedLeaf(sockPath, root) {
  const s = await tlsThrough(sockPath, { ca: root, servername: DOMAIN });
  try {
    return s.getPeerX509Certificate();
  } finally {
    s.destroy();
  }
}

/** GET over TLS through a forwarded socket; returns the body. */
function httpsGet(sockPath, urlPath, { ca, servername }) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      path: urlPath, headers: { host: servername, connection: 'close' }, timeout: 5000,
      createConnection: () => tls.connect({ socket: net.connect(sockPath), ca, servername }),
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString())
        : reject(new Error(`GET ${urlPath}: HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath}: timeout`)));
    req.on('error', reject);
    req.end();
  });
}

const obtainedLines = (child) => child.lines.filter((l) => l.includes('hub certificate obtained by ACME'));
/** not_after (Unix seconds) of every certificate a daemon logged as served. */
const servedNotAfters = (...children) => children.flatMap((c) => c.lines
  .filter((l) => /hub certificate (obtained by ACME|loaded from the ACME state)/.test(l))
  .map((l) => Number(logField(l, 'not_after'))));
/**
 * The end of validity of the certificate that carried a document: from the
 * document's own connection, unlike Network.getCertificate, which names the
 * origin's latest certificate from any connection. Certificates here are
 * renewed seconds apart, so this tells them apart.
 */
const docNotAfter = (doc) => doc.securityDetails.validTo;


/** Fingerprints of the certificates obtained after the first one. */
const renewedFps = (child) => obtainedLines(child).slice(1).map((l) => logField(l, 'fingerprint_sha256'));

/** SHA-256 fingerprint (AA:BB:…) of the leaf Chromium got for `origin`'s current document. */
async function chromiumLeaf(cdp, origin) {
  const { tableNames } = await cdp.send('Network.getCertificate', { origin });
  return new crypto.X509Certificate(Buffer.from(tableNames[0], 'base64')).fingerprint256;
}

/** CDP Network events of a page: WebSockets opened and closed, documents received. */
async function watchNetwork(context, page) {
  const cdp = await context.newCDPSession(page);
  const w = { cdp, ws: { created: [], closed: [] }, documents: [] };
  cdp.on('Network.webSocketCreated', (e) => w.ws.created.push(e.url));
  cdp.on('Network.webSocketClosed', (e) => w.ws.closed.push(e.requestId));
  cdp.on('Network.responseReceived', (e) => {
    if (e.type === 'Document') w.documents.push(e.response);
  });
  await cdp.send('Network.enable');
  return w;
}

test('ACME: the page over a certificate from pebble, renewed under an open page, account reused after a restart', { skip, timeout: 120000 }, async () => {
  await withEnv('acme_page', async (env) => {
    const t0 = Date.now();
    const certs = pebbleHttpsCert(env.dir);
    const pebble = startPebble(env, certs);
    const stateDir = env.file('state');
    const answerer = makeToken(env, 'flat-1a');
    const config = buildConfig({
      station: { id: 'door-1', name: 'Front door' },
      signaling: { mode: 'standalone' },
      hub: {
        listen: `${env.ns.addrA}:${HUB_PORT}`,
        publicUrl: `https://${DOMAIN}:${HUB_PORT}`,
        stateDir,
        tls: ['mode = "acme"', '', '[hub.tls.acme]',
          `directory_url = ${JSON.stringify(pebble.directoryUrl)}`,
          `domains = [${JSON.stringify(DOMAIN)}]`,
          'contact = ["mailto:admin@intercom.test"]',
          `ca_file = ${JSON.stringify(certs.ca)}`,
          // More than the hour pebble issues for: every check renews (the
          // daemon warns about it).
          'renew_before_days = 1',
          `check_interval_ms = ${CHECK_INTERVAL_MS}`],
        answerers: [{ ...answerer, name: 'Flat 1A', groups: ['residents'] }],
      },
      buttons: [{ name: 'call', group: 'residents' }],
      audio: { source: 'tone:600' },
      controlListen: '127.0.0.1:7081',
    });
    const configFile = env.file('intercomd.toml');
    fs.writeFileSync(configFile, config);
    const sockets = await env.ns.forward({
      control: '127.0.0.1:7081', hub: `${env.ns.addrA}:${HUB_PORT}`, mgmt: `127.0.0.1:${PEBBLE_MGMT}`,
    });
    const pebbleCa = fs.readFileSync(certs.ca);

    // pebble's issuing root and intermediate (made anew at each start).
    const root = await waitFor(() => httpsGet(sockets.mgmt, '/roots/0', { ca: pebbleCa, servername: 'localhost' }),
      { timeout: 10000, interval: 100, message: "pebble's management endpoint" });
    assert.match(root, /BEGIN CERTIFICATE/);
    const rootFile = env.file('pebble-root.pem');
    fs.writeFileSync(rootFile, root);

    // ---- 1. The first certificate.
    const tStart = Date.now();
    const daemon = startDaemon(env, configFile);
    const control = new Control(sockets.control);
    await waitForHttp(sockets.control, '/state', daemon, 'the simulated-hardware control API');
    const firstLine = (await waitForLog(daemon, /hub certificate obtained by ACME/, { timeout: 30000 })).line;
    const firstAt = logTime(firstLine);
    const fp1 = logField(firstLine, 'fingerprint_sha256');
    assert.ok(fp1, firstLine);
    assert.equal(daemon.lines.filter((l) => l.includes('ACME: account created')).length, 1);
    assert.ok(daemon.lines.some((l) => l.includes('ACME TLS-ALPN-01 validation connection answered')),
      'pebble validated on the hub listener');
    const leaf1 = await servedLeaf(sockets.hub, root);
    assert.equal(leaf1.fingerprint256, fp1, 'a verifying client gets the certificate the log names');
    assert.ok(leaf1.checkHost(DOMAIN), `the certificate names ${DOMAIN}: ${leaf1.subjectAltName}`);

    // ---- 2. Chromium trusting pebble's root through its own NSS database.
    const home = env.file('chromium-home');
    const nssdb = path.join(home, '.pki', 'nssdb');
    fs.mkdirSync(nssdb, { recursive: true });
    execFileSync('certutil', ['-d', `sql:${nssdb}`, '-N', '--empty-password'], { timeout: 15000 });
    execFileSync('certutil', ['-d', `sql:${nssdb}`, '-A', '-t', 'C,,', '-n', 'pebble', '-i', rootFile], { timeout: 15000 });
    const browser = await env.browser({
      env: { HOME: home },
      // Every reload must reach the hub to show the certificate it serves.
      blockServiceWorkers: true,
      extraArgs: [`--host-resolver-rules=MAP ${DOMAIN} ${env.ns.addrA}`],
    });
    const origin = `https://${DOMAIN}:${HUB_PORT}`;
    const flat = await env.page(browser, 'about:blank', 'flat-1a');
    const flatNet = await watchNetwork(browser, flat.page);
    await flat.page.goto(`${origin}/#token=${answerer.token}`, { timeout: 15000 });
    await waitForConnection(flat);
    const where = await flat.page.evaluate(() => ({ protocol: location.protocol, secure: isSecureContext, href: location.href }));
    assert.deepEqual(where, { protocol: 'https:', secure: true, href: `${origin}/` });
    assert.equal((await pageEvents(flat, { kind: 'rx', type: 'welcome' })).length, 1, 'signed in');
    assert.equal(flatNet.documents.at(-1).securityState, 'secure', JSON.stringify(flatNet.documents.at(-1).securityDetails));
    assert.equal(await chromiumLeaf(flatNet.cdp, origin), fp1, 'Chromium was served the ACME certificate');
    assert.equal(flatNet.ws.created.length, 1, `one WebSocket: ${JSON.stringify(flatNet.ws)}`);
    const signedInAt = Date.now();

    // ---- 3. Renewal under the open page.
    const renewed = await waitFor(() => obtainedLines(daemon).find((l) => logField(l, 'fingerprint_sha256') !== fp1),
      { timeout: CHECK_INTERVAL_MS + 20000, interval: 100, message: 'a renewed certificate' });
    const renewedAt = logTime(renewed);
    assert.ok(renewedAt > signedInAt, `the renewal (${renewedAt}) came after the page's WebSocket was up (${signedInAt})`);
    // A fresh connection gets a certificate obtained after the first (more
    // renewals may have followed by now).
    const leafNow = await servedLeaf(sockets.hub, root);
    assert.ok(renewedFps(daemon).includes(leafNow.fingerprint256), `served ${leafNow.fingerprint256}, renewed: ${renewedFps(daemon)}`);
    assert.notEqual(leafNow.fingerprint256, fp1);

    // The page's WebSocket, opened before the renewal, still works: a ring reaches it.
    await control.press();
    const ringing = await waitForState(flat, 'ringing', 10000);
    assert.equal(ringing.doorNameShown, 'Front door');
    await control.hangup();
    await waitForState(flat, 'idle', 10000);
    assert.equal(flatNet.ws.created.length, 1, `still one WebSocket: ${JSON.stringify(flatNet.ws)}`);
    assert.equal(flatNet.ws.closed.length, 0, 'the WebSocket never closed');
    assert.equal((await pageEvents(flat, { kind: 'tx', type: 'hello' })).length, 1, 'no new hello');
    assert.equal((await pageEvents(flat, { kind: 'close' })).length, 0, 'no close seen by the page');
    assert.equal((await pageEvents(flat, { kind: 'reconnect' })).length, 0, 'no reconnect');

    // The page's reload still works. Chromium sends it over one of the
    // page's idle keep-alive connections, so it may still be on the first
    // certificate: connections made before a renewal are kept, not cut.
    let docsBefore = flatNet.documents.length;
    await flat.page.reload({ timeout: 15000 });
    await waitForConnection(flat);
    const reloaded = flatNet.documents.slice(docsBefore).at(-1);
    assert.ok(reloaded, 'the reload fetched the page');
    const firstNotAfter = Number(logField(firstLine, 'not_after'));
    const reloadEnd = docNotAfter(reloaded);
    // A new connection may also resume the first TLS session (session
    // tickets), which carries the certificate it was made with.
    if (reloaded.connectionReused) assert.equal(reloadEnd, firstNotAfter, 'a kept connection keeps its certificate');
    // The log line of a renewal follows the swap by a moment.
    else await waitFor(() => servedNotAfters(daemon).includes(reloadEnd), { timeout: 3000, message: `reload over a certificate ending ${reloadEnd}` });
    // A new browser context has its own connection pool (and the same
    // trust): a new connection, over a renewed certificate, signed in.
    const ctx2 = await browser.browser().newContext({ serviceWorkers: 'block' });
    const fresh = await openPage(ctx2, 'about:blank', { label: 'flat-1a-new-context' });
    env.pages.push(fresh);
    const freshNet = await watchNetwork(ctx2, fresh.page);
    await fresh.page.goto(`${origin}/#token=${answerer.token}`, { timeout: 15000 });
    await waitForConnection(fresh);
    assert.equal(freshNet.documents.at(-1).connectionReused, false);
    assert.equal(freshNet.documents.at(-1).securityState, 'secure');
    const fpFresh = await chromiumLeaf(freshNet.cdp, origin);
    assert.ok(renewedFps(daemon).includes(fpFresh), `new context over ${fpFresh}; renewed: ${renewedFps(daemon)}`);
    assert.equal((await pageEvents(fresh, { kind: 'rx', type: 'welcome' })).length, 1);
    assert.ok(daemon.lines.some((l) => l.includes('every check orders a new one')), 'the daemon warns about renew_before');
    // Both pages sign in as flat-1a, and the hub keeps only the newest
    // connection of an answerer: close this one before the first page
    // signs in again.
    await ctx2.close();

    // ---- 4. Restart with the same state directory: the account is reused.
    await env.ns.kill(daemon);
    const daemon2 = startDaemon(env, configFile, { label: 'intercomd-2' });
    const loaded = await waitForLog(daemon2, /ACME: account loaded/, { timeout: 30000 });
    await waitForLog(daemon2, /hub certificate obtained by ACME/, { timeout: 30000 });
    assert.equal(daemon2.lines.filter((l) => l.includes('ACME: account created')).length, 0, 'no new account');
    const created = daemon.lines.find((l) => l.includes('ACME: account created'));
    assert.equal(logField(loaded.line, 'account_url'), logField(created, 'account_url'), 'the same account');
    // The old connections died with the first daemon: the reload is on a new
    // one, over the certificate the restarted daemon serves (the last one
    // stored, or a newer one).
    docsBefore = flatNet.documents.length;
    await flat.page.reload({ timeout: 15000 });
    await waitForConnection(flat);
    const afterRestart = flatNet.documents.slice(docsBefore).at(-1);
    assert.equal(afterRestart.connectionReused, false);
    assert.equal(afterRestart.securityState, 'secure');
    assert.equal(await flat.page.evaluate(() => location.protocol), 'https:');
    assert.equal((await pageEvents(flat, { kind: 'rx', type: 'welcome' })).length, 1, 'signed in after the restart');
    // Renewed at every check here: any certificate the restarted daemon
    // served (stored or newer), never the first one.
    const restartEnd = docNotAfter(afterRestart);
    assert.notEqual(restartEnd, firstNotAfter, 'not the first certificate after the restart');
    await waitFor(() => servedNotAfters(daemon2).includes(restartEnd), { timeout: 3000, message: `after the restart over a certificate ending ${restartEnd}; served: ${servedNotAfters(daemon2)}` });
    const pebbleLog = env.logs.find((l) => l.label === 'pebble').child.lines.join('\n');
    assert.ok(/There are now 1 accounts/.test(pebbleLog) && !/There are now 2 accounts/.test(pebbleLog), 'pebble saw one account');
    for (const d of [daemon, daemon2]) assert.equal(d.lines.some((l) => l.includes(answerer.token) || l.includes('-----BEGIN')), false);

    // The trust came from that database: Chromium with an empty HOME refuses the page.
    const emptyHome = env.file('chromium-home-empty');
    fs.mkdirSync(emptyHome);
    const untrusting = await env.browser({
      name: 'chromium-untrusting', env: { HOME: emptyHome },
      extraArgs: [`--host-resolver-rules=MAP ${DOMAIN} ${env.ns.addrA}`],
    });
    const refused = await openPage(untrusting, `${origin}/`, { label: 'untrusting' }).then(() => 'loaded', (e) => e.message);
    assert.match(refused, /ERR_CERT_AUTHORITY_INVALID/);

    process.stderr.write(`acme_page: first certificate ${Math.round(firstAt - tStart)} ms after the daemon started, `
      + `renewed ${Math.round(renewedAt - firstAt)} ms later (check every ${CHECK_INTERVAL_MS} ms); account ${logField(loaded.line, 'account_url')}; `
      + `${obtainedLines(daemon).length} certificates before the restart; reload after the renewal `
      + `${reloaded.connectionReused ? 'on a kept connection, first certificate' : 'on a new connection'}; test ${Date.now() - t0} ms\n`);
  });
});
