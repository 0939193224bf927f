// Hostile and broken input to the hub and the door: every case gets the
// documented error (docs/signaling.md) and/or a log line, the connection
// survives unless the protocol says otherwise, and the daemon keeps working.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withEnv } from './lib/fixture.mjs';
import { canUseNetns, sleep, waitFor } from './lib/util.mjs';
import { daemonSkipReason, standaloneSetup, bringUpStandalone } from './lib/daemon.mjs';
import { waitForConnection, waitForState, expectRemoteTone, pageEvents } from './lib/answerer.mjs';
import { expectDoorHears } from './lib/checks.mjs';
import { RawClient } from './lib/rawclient.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : daemonSkipReason();

function assertError(reply, code, { ref, callId } = {}, what = '') {
  assert.equal(reply.type, 'error', `${what}: expected an error, got ${JSON.stringify(reply)}`);
  assert.equal(reply.code, code, `${what}: error code ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.message, 'string', `${what}: error has a message`);
  if (ref !== undefined) assert.equal(reply.ref, ref, `${what}: error ref ${JSON.stringify(reply)}`);
  if (callId !== undefined) assert.equal(reply.call_id, callId, `${what}: error call_id ${JSON.stringify(reply)}`);
}

/**
 * Run `inject`, then wait for the door's reaction: an `error` reply with one of
 * `codes` reaching `client` (a page or a RawClient), or a WARN/ERROR line
 * from intercomd's own code (not a library's) after the injection matching `logRe`.
 */
async function expectDoorReport(client, daemon, inject, codes, logRe, what) {
  const mark = daemon.lines.length;
  const errorsNow = async () => (client.page
    ? (await pageEvents(client, { kind: 'rx', type: 'error' }))
    : client.messages.filter((m) => m.type === 'error'));
  const before = (await errorsNow()).length;
  await inject();
  return waitFor(async () => {
    const err = (await errorsNow()).slice(before).find((e) => codes.includes(e.code));
    if (err) return { via: `error ${err.code}`, detail: err };
    const line = daemon.lines.slice(mark).find((l) => /\b(WARN|ERROR) intercomd::/.test(l) && logRe.test(l));
    return line ? { via: `log: ${line.replace(/^\S+\s+/, '').slice(0, 160)}`, detail: line } : null;
  }, { timeout: 5000, message: `the door to report ${what} (error ${codes.join('|')} or a WARN/ERROR log line matching ${logRe})` });
}

test('bad input: errors with documented codes, the daemon survives and still calls', { skip, timeout: 240000 }, async () => {
  await withEnv('bad_input', async (env) => {
    const setup = standaloneSetup(env, {
      answerers: [
        { id: 'flat-1a', name: 'Flat 1A', groups: ['residents'] },
        { id: 'flat-1b', name: 'Flat 1B', groups: ['residents'] },
      ],
    });
    const { daemon, control, sockets } = await bringUpStandalone(env, setup);
    const url = `ws://${setup.hubAddr}/ws`;
    const [tokA, tokB] = setup.answerers;
    const connect = (label) => RawClient.connect(sockets.hub, url, label);
    const clients = [];
    const track = (c) => { clients.push(c); return c; };

    try {
      // ---- Before hello.
      const pre = track(await connect('pre-hello'));
      assertError(await pre.expectError({ type: 'ring', call_id: 'c-1', group: 'residents' }), 'not_authenticated', {}, 'ring before hello');
      assertError(await pre.expectError({ type: 'accept', call_id: 'c-1' }), 'not_authenticated', {}, 'accept before hello');
      assert.equal(pre.closeInfo, null, 'not_authenticated does not close the connection');

      // ---- Wrong token.
      const bad = track(await connect('bad-token'));
      const badReply = await bad.hello('answerer', 'not-a-valid-token');
      assertError(badReply, 'auth_failed', {}, 'hello with a wrong token');
      const badClose = await bad.waitClose();
      assert.equal(badClose?.code, 1008, `wrong token closes with 1008: ${JSON.stringify(badClose)}`);

      // ---- Wrong version (valid token).
      const ver = track(await connect('bad-version'));
      const verReply = await ver.hello('answerer', tokB.token, 2);
      assertError(verReply, 'unsupported_version', {}, 'hello with v=2');
      const verClose = await ver.waitClose();
      assert.equal(verClose?.code, 1008, `wrong version closes with 1008: ${JSON.stringify(verClose)}`);

      // ---- Tokens never appear in the log.
      assert.ok(!daemon.lines.some((l) => l.includes('not-a-valid-token') || l.includes(tokB.token)), 'a token was logged');

      // ---- Authenticated answerer (flat-1b) sending garbage.
      const b = track(await connect('flat-1b'));
      const welcome = await b.hello('answerer', tokB.token);
      assert.equal(welcome.type, 'welcome', `flat-1b welcome: ${JSON.stringify(welcome)}`);
      assert.equal(welcome.id, 'flat-1b');
      assert.deepEqual(welcome.groups, ['residents']);
      assert.ok(Array.isArray(welcome.ice_servers), 'welcome carries ice_servers');

      assertError(await b.expectError('{"type": "accept", '), 'bad_json', {}, 'malformed JSON');
      assertError(await b.expectError('[1,2,3]'), 'bad_message', {}, 'JSON that is not an object');
      assertError(await b.expectError(Buffer.from('{"type":"ping"}'), { binary: true }), 'bad_message', {}, 'binary frame');
      assertError(await b.expectError({ type: 'frobnicate', call_id: 'c-1' }), 'unknown_type', { ref: 'frobnicate' }, 'unknown type');
      assertError(await b.expectError({ call_id: 'c-1' }), 'bad_message', {}, 'no type');
      assertError(await b.expectError({ type: 'accept' }), 'bad_message', { ref: 'accept' }, 'accept without call_id');
      assertError(await b.expectError({ type: 'accept', call_id: 42 }), 'bad_message', { ref: 'accept' }, 'accept with a numeric call_id');
      assertError(await b.expectError({ type: 'accept', call_id: 'bad id!' }), 'bad_message', { ref: 'accept' }, 'call_id with invalid characters');
      assertError(await b.expectError({ type: 'accept', call_id: 'x'.repeat(65) }), 'bad_message', { ref: 'accept' }, 'call_id of 65 characters');
      assertError(await b.expectError({ type: 'accept', call_id: '' }), 'bad_message', { ref: 'accept' }, 'empty call_id');
      assertError(await b.expectError({ type: 'accept', call_id: 'c-unknown' }), 'unknown_call', { ref: 'accept', callId: 'c-unknown' }, 'accept for an unknown call');
      assertError(await b.expectError({ type: 'offer', call_id: 'c-unknown', sdp: 'v=0\r\n' }), 'unknown_call', { ref: 'offer' }, 'offer for an unknown call');
      assertError(await b.expectError({ type: 'register', groups: ['staff'] }), 'not_permitted', { ref: 'register' }, 'register for a group not configured');
      const fromPong = b.messages.length;
      b.send({ type: 'ping' });
      await b.next((m) => m.type === 'pong', { from: fromPong, what: 'pong after errors' });
      assert.equal(b.closeInfo, null, 'errors do not close the connection');

      // ---- Oversize frame: too_large then close 1009.
      const big = track(await connect('oversize'));
      assert.equal((await big.hello('answerer', tokB.token)).type, 'welcome');
      const huge = JSON.stringify({ type: 'ping', pad: 'x'.repeat(70000) });
      const bigReply = await big.expectError(huge);
      assertError(bigReply, 'too_large', {}, `frame of ${huge.length} bytes`);
      const bigClose = await big.waitClose();
      assert.equal(bigClose?.code, 1009, `oversize closes with 1009: ${JSON.stringify(bigClose)}`);
      // The second flat-1b connection replaced the first (close 4000): reconnect it.
      const bClose = await b.waitClose(3000);
      assert.equal(bClose?.code, 4000, `a second hello for flat-1b replaces the first with close 4000: ${JSON.stringify(bClose)}`);
      const b2 = track(await connect('flat-1b-again'));
      assert.equal((await b2.hello('answerer', tokB.token)).type, 'welcome');

      // ---- A call between the door and flat-1a (the page).
      const browser = await env.browser({ micHz: 1000, secureOrigins: [setup.origin] });
      const flat = await env.page(browser, `${setup.origin}/?raw=1#token=${tokA.token}`, 'flat-1a');
      await waitForConnection(flat);
      await control.press();
      const ringing = await waitForState(flat, 'ringing', 10000);
      const callId = ringing.callId;
      await b2.next((m) => m.type === 'ring' && m.call_id === callId, { what: 'ring at the raw flat-1b' });
      await flat.page.getByRole('button', { name: 'Accept the call' }).click();
      await b2.next((m) => m.type === 'taken' && m.call_id === callId, { what: 'taken at the raw flat-1b' });
      await waitForState(flat, 'in_call', 20000);
      await control.waitForCallState('in_call', 10000);
      await expectRemoteTone(flat, 600, { timeout: 15000 });

      // A non-party may not inject media signaling nor end the call.
      assertError(await b2.expectError({ type: 'offer', call_id: callId, sdp: 'v=0\r\n' }), 'not_permitted', { ref: 'offer', callId }, 'offer from a non-party');
      assertError(await b2.expectError({ type: 'answer', call_id: callId, sdp: 'v=0\r\n' }), 'not_permitted', { ref: 'answer', callId }, 'answer from a non-party');
      assertError(await b2.expectError({ type: 'candidate', call_id: callId, candidate: null }), 'not_permitted', { ref: 'candidate', callId }, 'candidate from a non-party');
      const hangupReply = await b2.expectError({ type: 'hangup', call_id: callId, reason: 'normal' });
      assert.equal(hangupReply.type, 'error', 'hangup from a non-party is refused');
      const lateFrom = b2.messages.length;
      b2.send({ type: 'accept', call_id: callId });
      const late = await b2.next((m) => m.call_id === callId, { from: lateFrom, what: 'reply to a late accept' });
      assert.equal(late.type, 'taken', `a late accept gets "taken": ${JSON.stringify(late)}`);
      await sleep(300);
      assert.equal((await control.state()).call.state, 'in_call', 'the call survives a non-party\'s messages');

      // Invalid SDP and an invalid candidate from the accepted party (through
      // the page's own socket) reach the door mid-call: it answers with an
      // error or logs a warning, and the call goes on.
      const sdpSeen = await expectDoorReport(flat, daemon, () => flat.page.evaluate(
        (cid) => window.intercom.send({ type: 'answer', call_id: cid, sdp: 'this is not SDP' }), callId),
      ['bad_sdp', 'bad_state'], /answer|sdp/i, 'an invalid SDP answer mid-call');
      const candSeen = await expectDoorReport(flat, daemon, () => flat.page.evaluate((cid) => window.intercom.send({
        type: 'candidate', call_id: cid,
        candidate: { candidate: 'candidate:garbage not a candidate', sdpMid: '0', sdpMLineIndex: 0 },
      }), callId), ['bad_candidate'], /candidate/i, 'an invalid ICE candidate mid-call');

      // A candidate of the wrong shape is refused by the hub itself.
      await flat.page.evaluate((cid) => window.intercom.send({ type: 'candidate', call_id: cid, candidate: 42 }), callId);
      await waitFor(async () => (await pageEvents(flat, { kind: 'rx', type: 'error' })).some((e) => e.code === 'bad_message' && e.ref === 'candidate'),
        { timeout: 5000, message: 'error bad_message for a candidate that is a number' });

      assert.equal((await control.state()).call.state, 'in_call', 'the call survives invalid SDP and candidates');
      await expectRemoteTone(flat, 600, { timeout: 10000 });
      await expectDoorHears(setup.recordFile, 1000, { timeout: 10000 });

      await flat.page.getByRole('button', { name: 'Hang up' }).click();
      await waitForState(flat, 'idle', 5000);
      await control.waitForNoCall(10000);

      // ---- The accepting party's first answer is not SDP: the door must
      // refuse it (bad_sdp to the hub and/or a log line) and not hang.
      await control.press();
      const ring3 = await b2.next((m) => m.type === 'ring' && m.call_id !== callId, { what: 'ring for the third call at the raw flat-1b' });
      const cid3 = ring3.call_id;
      await waitForState(flat, 'ringing', 10000);
      const fromAcc = b2.messages.length;
      b2.send({ type: 'accept', call_id: cid3 });
      const offer = await b2.next((m) => m.type === 'offer' && m.call_id === cid3, { from: fromAcc, timeout: 10000, what: 'the door\'s offer at the raw accepter' });
      assert.match(offer.sdp, /^v=0\r?\n/, 'the offer is SDP');
      assert.match(offer.sdp, /m=audio .*\b111\b/, 'the offer has Opus (payload type 111) audio');
      assert.match(offer.sdp, /a=rtpmap:111 opus\/48000\/2/i, 'payload type 111 is opus/48000/2');
      const taken3 = await waitForState(flat, 'idle', 5000);
      assert.equal(taken3.message, 'Answered by Flat 1B');
      const rawCand = await expectDoorReport(b2, daemon, () => b2.send({
        type: 'candidate', call_id: cid3,
        candidate: { candidate: 'candidate:1 1 udp notanumber 10.0.0.1 x typ host', sdpMid: '0', sdpMLineIndex: 0 },
      }), ['bad_candidate'], /candidate/i, 'an invalid ICE candidate before the answer');
      const rawSdp = await expectDoorReport(b2, daemon, () => b2.send({ type: 'answer', call_id: cid3, sdp: 'v=0\r\nthis is not SDP\r\n' }),
        ['bad_sdp'], /sdp|answer/i, 'an invalid SDP answer');
      // The door ends that call (or the accepter does): either way it must
      // leave the door free for the next visitor.
      b2.send({ type: 'hangup', call_id: cid3, reason: 'error' });
      await control.waitForNoCall(10000);

      // ---- Still alive, and a good call works afterwards.
      assert.equal(daemon.exitInfo, null, 'the daemon is still running');
      await control.press();
      await waitForState(flat, 'ringing', 10000);
      await flat.page.getByRole('button', { name: 'Accept the call' }).click();
      await waitForState(flat, 'in_call', 20000);
      await expectRemoteTone(flat, 600, { timeout: 15000 });
      await expectDoorHears(setup.recordFile, 1000, { timeout: 15000 });
      await control.hangup();
      await waitForState(flat, 'idle', 5000);
      await control.waitForNoCall(10000);
      process.stderr.write(`bad_input: door reports: mid-call SDP via ${sdpSeen.via}, mid-call candidate via ${candSeen.via}, `
        + `pre-answer candidate via ${rawCand.via}, pre-answer SDP via ${rawSdp.via}; non-party hangup got ${hangupReply.code}\n`);
      // Checked last so that it does not hide the rest.
      assert.match(offer.sdp, /m=application .*webrtc-datachannel/,
        `the offer carries a data channel; its m= lines: ${JSON.stringify(offer.sdp.split(/\r?\n/).filter((l) => l.startsWith('m=')))}`);
    } finally {
      for (const c of clients) c.close();
    }
  });
});
