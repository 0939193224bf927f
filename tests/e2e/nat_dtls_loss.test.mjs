// One lost datagram at the wrong moment: the door's NAT drops the first
// large UDP datagram the door sends (over 300 bytes: its DTLS flight 5,
// Certificate … Finished; STUN, the ClientHello and audio packets are
// smaller), and nothing else. RFC 6347 §4.2.4 recovers this by
// retransmission, but the WebRTC stack's DTLS client (rtc-dtls 0.21.1)
// clears its retransmission timer whenever handshake packets arrive and
// never resends its flight 5. The station notices the stall
// (ice.dtls_timeout_ms after ICE connected), builds a new session and
// re-offers; the page answers on a new peer connection and the call sets up.
// On a link with 5 % loss this rescues about 1 call in 25.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canUseNetns } from './lib/util.mjs';
import { daemonSkipReason, logTime, waitForLog } from './lib/daemon.mjs';
import { withRig, natRigSkipReason } from './lib/natrig.mjs';
import { bringUpNatCall, turnServers, DOOR_TONE, MIC_TONE } from './lib/natcall.mjs';
import { waitForState, expectRemoteTone } from './lib/answerer.mjs';
import { expectDoorHears } from './lib/checks.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : (daemonSkipReason() || natRigSkipReason());

test('the door\'s DTLS flight 5 lost once: a new session sets the call up', {
  skip, timeout: 90000,
}, async () => {
  await withRig({}, async (rig) => {
    await rig.startTurn();
    const s = await bringUpNatCall(rig, {
      servers: turnServers(rig, ['stun']),
      logLevel: 'info,rtc_dtls=debug,webrtc=warn,rtc=warn',
    });
    // `nth` with a period far beyond a call's datagrams: the first match only.
    await rig.ipt('natd', '-t', 'mangle', '-A', 'FORWARD', '-i', 'lan', '-p', 'udp', '-m', 'length', '--length', '300:65535',
      '-m', 'statistic', '--mode', 'nth', '--every', '1000000', '--packet', '0', '-j', 'DROP');
    const from = s.door.lines.length;
    const pressedAt = Date.now();
    await s.control.press();
    await waitForState(s.page, 'ringing', 10000);
    await s.page.page.getByRole('button', { name: 'Accept the call' }).click();
    try {
      await waitForLog(s.door, /AUDIO CONNECTION ESTABLISHED/, { from, timeout: 15000 });
    } finally {
      const listing = await rig.counters('natd', 'mangle', 'FORWARD');
      const dropped = Number((listing.split('\n').find((l) => /DROP/.test(l)) || '-1').trim().split(/\s+/)[0]);
      const flights = s.door.lines.slice(from).filter((l) => /Send \[handshake:client\]|retransmit/.test(l));
      process.stderr.write(`dtls-loss: ${dropped} datagram(s) dropped; the door's DTLS sends:\n${flights.map((l) => `  ${l.replace(/^\S+\s+/, '')}`).join('\n')}\n`);
      assert.equal(dropped, 1, `exactly one datagram dropped:\n${listing}`);
    }
    // The story in the door's log: the stall, the recovery, the new session.
    const tail = s.door.lines.slice(from).join('\n');
    const at = (re) => logTime(s.door.lines.slice(from).find((l) => re.test(l)) || '');
    const iceUp = at(/ICE connected/);
    const stalled = at(/DTLS handshake stalled/);
    const audio = at(/AUDIO CONNECTION ESTABLISHED/);
    process.stderr.write(`dtls-loss: ICE connected → stall reported ${Math.round(stalled - iceUp)} ms; `
      + `stall → audio on the new session ${Math.round(audio - stalled)} ms; press → audio ${Math.round(audio - pressedAt)} ms\n`);
    assert.match(tail, /DTLS handshake stalled after ICE connected/);
    assert.match(tail, /call media lost; trying to bring it back.*attempt=1.*reason=DTLS handshake stalled.*remedy="?new media session/);
    assert.match(tail, /replacing the media session's peer connection/);
    const events = await s.page.page.evaluate(() => window.intercom.events.map((e) => e.kind));
    assert.ok(events.includes('media-renewed'), `page events: ${events.join(',')}`);
    await waitForState(s.page, 'in_call', 10000);
    await expectRemoteTone(s.page, DOOR_TONE, { timeout: 10000 });
    await expectDoorHears(s.recordFile, MIC_TONE, { timeout: 10000 });
    await s.control.hangup();
    await s.control.waitForNoCall(10000);
  });
});
