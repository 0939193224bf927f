// Headless Chromium (the system's /usr/bin/chromium, never a downloaded one)
// launched inside a test's network namespace through a wrapper script.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { writeSineWav } from './wav.mjs';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/**
 * Launch Chromium inside `ns`; returns a Playwright BrowserContext. Options:
 *  - micHz: frequency of the fake microphone's sine (default 1000)
 *  - micBurstMs: the sine in bursts, on and off for this long (default 0: steady)
 *  - micWav: a WAV file to play as the microphone instead of the sine
 *  - secureOrigins: origins treated as secure (http pages need this for getUserMedia)
 *  - routedPages: the test serves pages with page.route(); such pages have no
 *    address space, so Chromium's local-network-access checks would block
 *    their WebSocket to the hub's private address: turn those checks off.
 *  - fakeMediaUi: grant the microphone without asking (default true); false
 *    leaves the permission to the test (to deny it, see denyMicrophone)
 *  - spkiList: base64 SHA-256 public-key hashes whose certificates Chromium
 *    accepts without a trusted CA (--ignore-certificate-errors-spki-list):
 *    trust in exactly one test key, every other certificate error stays
 *  - extraArgs: further command-line switches
 *  - env: environment variables for Chromium on top of ours (HOME, to give
 *    it a certificate database of the test's own)
 *  - bypassCSP: pages ignore their Content-Security-Policy. Only for probes
 *    a test puts into the page (an AudioWorklet loaded from a blob: URL),
 *    which the page's policy rightly refuses; every other test runs the
 *    page under its real policy.
 */
export async function launchChromium(ns, opts = {}) {
  const { dir, launch } = prepare(ns, opts);
  // A persistent context on a fresh directory of ours: Playwright passes it
  // as --user-data-dir, and teardown of the namespace's directory removes it.
  // serviceWorkers: 'block' for tests that must see every navigation reach
  // the network (the answering page installs one in a secure context).
  return chromium.launchPersistentContext(path.join(dir, 'profile'), {
    ...launch,
    ...(opts.blockServiceWorkers ? { serviceWorkers: 'block' } : {}),
    ...(opts.bypassCSP ? { bypassCSP: true } : {}),
  });
}

/**
 * The same Chromium as a Browser whose newContext() gives fresh contexts
 * (own connection pool and TLS session cache): for measurements that must
 * include a full handshake every time. The caller closes it.
 */
export async function launchChromiumBrowser(ns, opts = {}) {
  return chromium.launch(prepare(ns, opts).launch);
}

function prepare(ns, { micHz = 1000, micBurstMs = 0, micWav = null, secureOrigins = [], name = 'chromium', routedPages = false, fakeMediaUi = true, spkiList = [], extraArgs = [], env = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(ns.dir, `${name}-`));
  const wav = micWav || writeSineWav(path.join(dir, `mic-${micHz}hz.wav`), { freq: micHz, seconds: 12, burstMs: micBurstMs });
  const wrapper = path.join(dir, 'chromium-in-netns.sh');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec '${ns.name}' '${CHROMIUM}' "$@"\n`, { mode: 0o755 });
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--disable-extensions',
    '--no-first-run',
    '--no-default-browser-check',
    '--metrics-recording-only',
    '--disable-domain-reliability',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
    '--autoplay-policy=no-user-gesture-required',
  ];
  if (fakeMediaUi) args.push('--use-fake-ui-for-media-stream');
  if (routedPages) args.push('--disable-features=LocalNetworkAccessChecks');
  args.push(...extraArgs);
  if (secureOrigins.length) args.push(`--unsafely-treat-insecure-origin-as-secure=${secureOrigins.join(',')}`);
  // Chromium honours this switch only with --user-data-dir, which Playwright
  // always passes.
  if (spkiList.length) args.push(`--ignore-certificate-errors-spki-list=${spkiList.join(',')}`);
  const launch = {
    executablePath: wrapper,
    args,
    // Extra environment (a HOME with its own NSS trust store, say).
    env: { ...process.env, ...env },
    headless: true,
    timeout: 30000,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  };
  return { dir, launch };
}

/**
 * Open a page and collect its console output (never printed unless the test
 * fails). Returns { page, console: string[] }.
 */
export async function openPage(context, url, { label = 'page' } = {}) {
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`[${label}] ${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`[${label}] pageerror: ${err.message}`));
  page.setDefaultTimeout(15000);
  await page.goto(url, { timeout: 15000 });
  return { page, console: consoleLines, label };
}

/**
 * Deny the microphone to `origin` in the browser of `page`, as a resident
 * who answered "Block" would have (CDP Browser.setPermission). The override
 * lasts as long as the returned CDP session: keep it attached.
 */
export async function denyMicrophone(context, page, origin) {
  // A browser-level session: the persistent context is the browser's default one.
  const browser = context.browser();
  const cdp = browser ? await browser.newBrowserCDPSession() : await context.newCDPSession(page);
  await cdp.send('Browser.setPermission', { permission: { name: 'microphone' }, setting: 'denied', origin });
  return cdp;
}
