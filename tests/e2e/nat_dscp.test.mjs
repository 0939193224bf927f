// DSCP EF on the wire. The WebRTC stack writes the TOS byte of every datagram
// itself (quinn-udp), so a socket option set by the station would not stick.
// A netfilter rule on the station does: its output hook at mangle priority
// runs after the socket layer, keyed on the service's own user (`meta skuid`),
// which covers every UDP socket the stack opens (host, srflx and TURN relay
// traffic) whatever port it picks. The proof is counted at the door's NAT
// box: `-m dscp --dscp-class EF` against all UDP from the door, first without
// the rule (the stack sends no EF), then with it (every datagram EF).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { canUseNetns, sleep } from './lib/util.mjs';
import { daemonSkipReason } from './lib/daemon.mjs';
import { withRig, natRigSkipReason } from './lib/natrig.mjs';
import { bringUpNatCall, callWithAudio, turnServers } from './lib/natcall.mjs';
import { expectRemoteTone } from './lib/answerer.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : (daemonSkipReason() || natRigSkipReason());
const DOOR_UID = 65534; // the station's service user in this test
const WINDOW_MS = 3000;

function counts(listing) {
  const rows = listing.split('\n').filter((l) => /^\s*\d+\s+\d+/.test(l));
  const n = (re) => { const r = rows.find((l) => re.test(l)); return r ? Number(r.trim().split(/\s+/)[0]) : -1; };
  // Two counting rules: UDP with DSCP EF (0x2e), UDP with any other DSCP.
  const ef = n(/DSCP match 0x2e/);
  const other = n(/DSCP match !0x2e/);
  return { ef, other, udp: ef + other };
}

test('DSCP EF: a rule keyed on the station\'s user marks every media datagram', { skip, timeout: 120000 }, async () => {
  await withRig({}, async (rig) => {
    await rig.startTurn();
    // Counting rules at the NAT box, on traffic from the door's LAN.
    await rig.ipt('natd', '-t', 'mangle', '-A', 'FORWARD', '-i', 'lan', '-p', 'udp', '-m', 'dscp', '--dscp-class', 'EF');
    await rig.ipt('natd', '-t', 'mangle', '-A', 'FORWARD', '-i', 'lan', '-p', 'udp', '-m', 'dscp', '!', '--dscp-class', 'EF');
    const s = await bringUpNatCall(rig, { servers: turnServers(rig, ['stun', 'udp']), doorUid: DOOR_UID });
    await callWithAudio(s);
    const measure = async () => {
      await rig.ipt('natd', '-t', 'mangle', '-Z', 'FORWARD');
      await sleep(WINDOW_MS);
      const listing = await rig.counters('natd', 'mangle', 'FORWARD');
      return { ...counts(listing), listing };
    };
    const before = await measure();
    assert.ok(before.udp > 100, `media flows from the door (${before.udp} UDP packets in ${WINDOW_MS} ms):\n${before.listing}`);
    assert.equal(before.ef, 0, `the stack itself marks nothing EF:\n${before.listing}`);
    assert.ok(before.other > 100, `all of it unmarked:\n${before.listing}`);

    // The station's rule, the nftables table of docs/configuration.md (ice.dscp).
    const rules = rig.file('dscp.nft');
    fs.writeFileSync(rules, [
      'table inet intercomd_dscp {',
      '  chain output {',
      '    type route hook output priority mangle; policy accept;',
      `    meta skuid ${DOOR_UID} meta l4proto udp ip dscp set ef`,
      `    meta skuid ${DOOR_UID} meta l4proto udp ip6 dscp set ef`,
      '  }',
      '}',
      '',
    ].join('\n'));
    await rig.exec('door', 'nft', '-f', rules);
    const after = await measure();
    process.stderr.write(`dscp: without the rule ${before.ef}/${before.udp} UDP packets EF; with it ${after.ef}/${after.udp} in ${WINDOW_MS} ms\n`);
    assert.ok(after.udp > 100, `media still flows:\n${after.listing}`);
    assert.equal(after.other, 0, `every UDP datagram from the door is EF:\n${after.listing}`);
    // Marking changes nothing for the call.
    await expectRemoteTone(s.page, 600, { timeout: 5000, count: 2 });
    await s.control.hangup();
    await s.control.waitForNoCall(10000);
  });
});

// TURN over TCP: the audio travels in the bridge's TCP stream to coturn,
// which the station marks itself (IP_TOS on the socket, `ice.dscp`, default
// on). UDP is dropped at the door's NAT so the call must take that path.
// Counted at the NAT box over the whole call: every TCP segment from the
// door to the TURN server is EF; the door's signaling connection to the hub
// (TCP 443, not media) is not, which shows the count can tell them apart.
test('DSCP EF over TURN/TCP: the bridge marks its stream to the TURN server', { skip, timeout: 120000 }, async () => {
  await withRig({}, async (rig) => {
    await rig.startTurn();
    await rig.blockDoorUdp();
    for (const [dst, port] of [[rig.addr.turn, '3478'], [rig.addr.hub, '443']]) {
      for (const neg of [[], ['!']]) {
        await rig.ipt('natd', '-t', 'mangle', '-A', 'FORWARD', '-i', 'lan', '-p', 'tcp', '-d', dst, '--dport', port,
          '-m', 'dscp', ...neg, '--dscp-class', 'EF');
      }
    }
    const s = await bringUpNatCall(rig, { servers: turnServers(rig, ['stun', 'udp', 'tcp']) });
    const { established } = await callWithAudio(s);
    assert.match(established, /\(local\).*relay/, `the door's media is relayed: ${established}`);
    const bridged = s.door.lines.find((l) => /TURN over TCP bridged through/.test(l));
    assert.ok(bridged && /tos=0xb8/.test(bridged), `the bridge marks EF: ${bridged}`);
    await sleep(WINDOW_MS);
    const listing = await rig.counters('natd', 'mangle', 'FORWARD');
    const rows = listing.split('\n').filter((l) => /^\s*\d+\s+\d+/.test(l));
    const n = (port, ef) => {
      const r = rows.find((l) => l.includes(`dpt:${port}`) && (ef ? /DSCP match 0x2e/ : /DSCP match !0x2e/).test(l));
      return r ? Number(r.trim().split(/\s+/)[0]) : -1;
    };
    const turn = { ef: n(3478, true), other: n(3478, false) };
    const hub = { ef: n(443, true), other: n(443, false) };
    process.stderr.write(`dscp turn/tcp: segments to the TURN server ${turn.ef} EF, ${turn.other} not; to the hub ${hub.ef} EF, ${hub.other} not\n`);
    assert.ok(turn.ef > 100, `the call's TCP stream to the TURN server carries the audio (${turn.ef} EF segments):\n${listing}`);
    assert.equal(turn.other, 0, `every segment to the TURN server is EF, the handshake's too:\n${listing}`);
    assert.ok(hub.other > 0, `the signaling connection is counted:\n${listing}`);
    assert.equal(hub.ef, 0, `signaling is not marked:\n${listing}`);
    await expectRemoteTone(s.page, 600, { timeout: 5000, count: 2 });
    await s.control.hangup();
    await s.control.waitForNoCall(10000);
  });
});
