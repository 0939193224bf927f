// An invite link carries the resident's token in the fragment
// (https://<host>/#token=…), which browsers never send to a server. The page
// keeps it on the device and takes it out of the address bar and the
// history at once; a reload stays signed in. The older ?token=… still works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, pageEvents } from './lib/answerer.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

async function history(context, page) {
  const cdp = await context.newCDPSession(page);
  try {
    const h = await cdp.send('Page.getNavigationHistory');
    return h.entries.map((e) => e.url);
  } finally {
    await cdp.detach().catch(() => {});
  }
}

async function expectNoToken(context, p, token, what) {
  const url = p.page.url();
  assert.equal(url.includes(token), false, `${what}: page.url() ${url}`);
  const entries = await history(context, p.page);
  for (const u of entries) assert.equal(u.includes(token), false, `${what}: history entry ${u}`);
  const inPage = await p.page.evaluate(() => ({ href: location.href, length: history.length }));
  assert.equal(inPage.href.includes(token), false, `${what}: location.href ${inPage.href}`);
  return { url, entries, length: inPage.length };
}

test('token from the fragment: stored, gone from the address bar and history, signed in after reload', { skip, timeout: 120000 }, async () => {
  await withEnv('token_hygiene', async (env) => {
    const setup = standaloneSetup(env, {
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A' },
        { id: 'flat-1b', name: 'Flat 1B' },
      ],
    });
    const { daemon } = await bringUpStandalone(env, setup);
    const [tokA, tokB] = setup.answerers;
    const browser = await env.browser({ secureOrigins: [setup.origin] });

    // ---- #token=… with another parameter kept.
    const a = await env.page(browser, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-1a');
    await waitForConnection(a);
    const first = await expectNoToken(browser, a, tokA.token, 'after opening the invite link');
    assert.equal(first.url, `${setup.origin}/?raw=1`);
    // The tab's blank start page, then the page: replaced, not pushed.
    assert.deepEqual(first.entries.filter((u) => u !== 'about:blank'), [`${setup.origin}/?raw=1`]);
    assert.equal(first.length, first.entries.length, 'history.length matches the entries: nothing pushed');
    assert.equal(await a.page.evaluate(() => localStorage.getItem('intercom.token')), tokA.token, 'kept on the device');

    // ---- Reload: signed in from storage, welcome received again.
    await a.page.reload();
    await waitForConnection(a);
    const welcomes = await pageEvents(a, { kind: 'rx', type: 'welcome' });
    assert.equal(welcomes.length, 1, 'welcome after the reload');
    assert.equal(welcomes[0].id, 'flat-1a');
    await expectNoToken(browser, a, tokA.token, 'after the reload');

    // ---- The legacy ?token=… is taken out the same way, in a new tab.
    const b = await env.page(browser, `${setup.origin}/?token=${tokB.token}&raw=1`, 'flat-1b');
    await waitForConnection(b);
    const legacy = await expectNoToken(browser, b, tokB.token, 'after a ?token= link');
    assert.equal(legacy.url, `${setup.origin}/?raw=1`);
    assert.deepEqual(legacy.entries.filter((u) => u !== 'about:blank'), [`${setup.origin}/?raw=1`]);
    assert.equal(legacy.length, legacy.entries.length);
    assert.equal((await pageEvents(b, { kind: 'rx', type: 'welcome' }))[0].id, 'flat-1b');
    // Each tab keeps the flat it was opened for.
    assert.equal((await pageEvents(a, { kind: 'rx', type: 'welcome' })).at(-1).id, 'flat-1a');

    // ---- The token reached no log and no server.
    for (const p of [a, b]) {
      for (const tok of [tokA.token, tokB.token]) {
        assert.equal(p.console.some((l) => l.includes(tok)), false, `${p.label} console holds a token`);
      }
    }
    assert.equal(daemon.lines.some((l) => l.includes(tokA.token) || l.includes(tokB.token)), false, 'the daemon logged a token');
  });
});
