// Calls through NATs and TURN (lib/natrig.mjs): the door station and the
// resident's Chromium each behind their own NAT, the hub and coturn on the
// "public" side. Every path carries audio both ways, checked by content, and
// the door's log names the selected candidate pair.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { canUseNetns, waitFor } from './lib/util.mjs';
import { daemonSkipReason } from './lib/daemon.mjs';
import { withRig, natRigSkipReason } from './lib/natrig.mjs';
import { bringUpNatCall, callWithAudio, selectedPair, turnServers } from './lib/natcall.mjs';

const skip = !canUseNetns() ? 'needs root and iproute2 (network namespaces)' : (daemonSkipReason() || natRigSkipReason());

/** Packets counted by the first rule of `iptables -L -v -x -n` output matching `re`. */
function ruleCount(listing, re) {
  const line = listing.split('\n').find((l) => re.test(l));
  return line ? Number(line.trim().split(/\s+/)[0]) : -1;
}

async function pathCall(rig, opts, check) {
  await rig.startTurn({ sharedSecret: opts.sharedSecret });
  await opts.before?.(rig);
  const s = await bringUpNatCall(rig, { ...opts, servers: turnServers(rig, opts.kinds) });
  const { established } = await callWithAudio(s);
  const pair = selectedPair(established);
  assert.ok(pair, `selected_pair in: ${established}`);
  process.stderr.write(`${opts.title}: ${established.replace(/^.*selected_pair=/, 'selected_pair=')}\n`);
  await check(pair, s, established);
  await s.control.hangup();
  await s.control.waitForNoCall(10000);
  return s;
}

test('direct through two port-preserving NATs (STUN from coturn)', { skip, timeout: 90000 }, async () => {
  await withRig({ natDoor: 'preserving', natResident: 'preserving' }, (rig) => pathCall(rig, {
    title: 'direct', kinds: ['stun'],
  }, (pair, s, line) => {
    assert.notEqual(pair.local, 'relay', line);
    assert.notEqual(pair.remote, 'relay', line);
    assert.ok(['srflx', 'prflx'].includes(pair.remote), `the resident is reached at its NAT's address: ${line}`);
    assert.ok(pair.remoteText.includes(rig.addr.natrWan), `remote is the resident NAT's public address: ${line}`);
  }));
});

test('door behind a symmetric NAT', { skip, timeout: 90000 }, async () => {
  await withRig({ natDoor: 'symmetric', natResident: 'preserving' }, (rig) => pathCall(rig, {
    title: 'symmetric', kinds: ['stun', 'udp'],
  }, (pair, s, line) => {
    // The door's mapping changes per destination, and the resident's NAT
    // only admits replies: the audio goes through the resident's relay.
    assert.ok(pair.local === 'relay' || pair.remote === 'relay', `a relay is on the path: ${line}`);
  }));
});

test('relay only (ice.transport_policy = "relay") via TURN over UDP', { skip, timeout: 90000 }, async () => {
  await withRig({}, (rig) => pathCall(rig, {
    title: 'relay-only', kinds: ['stun', 'udp'], relayOnly: true,
  }, (pair, s, line) => {
    assert.equal(pair.local, 'relay', line);
    assert.ok(pair.localText.includes(rig.addr.turn), `the door's relay is on coturn: ${line}`);
  }));
});

test('relay only with shared-secret TURN credentials minted by the hub (TURN REST scheme)', { skip, timeout: 90000 }, async () => {
  await withRig({}, (rig) => pathCall(rig, {
    title: 'relay-only-rest', kinds: ['stun', 'udp'], relayOnly: true, sharedSecret: true,
  }, async (pair, s, line) => {
    assert.equal(pair.local, 'relay', line);
    // coturn knows no user: it accepted the door's and the page's
    // allocations only because their passwords derive from the secret.
    const allocated = (who) => rig.turn.child.lines.some((l) =>
      new RegExp(`user <\\d+:${who}>.*ALLOCATE processed, success`).test(l));
    assert.ok(allocated('door-1'), `coturn allocated a relay for door-1:\n${rig.turn.child.lines.filter((l) => /ALLOCATE/.test(l)).join('\n')}`);
    // The page gathers its own relay candidate on its own schedule: the
    // call can be up through the door's relay (about 180 ms) before it.
    await waitFor(() => allocated('flat-1a'), { timeout: 5000, interval: 50, message: 'coturn to allocate a relay for flat-1a' });
    const secret = fs.readFileSync(rig.turn.secretFile, 'utf8').trim();
    assert.ok(!s.door.lines.some((l) => l.includes(secret)), 'the secret never reaches the door log');
    assert.ok(!s.hub.lines.some((l) => l.includes(secret)), 'the secret never reaches the hub log');
  }));
});

test('UDP blocked at the door NAT: TURN over TCP', { skip, timeout: 90000 }, async () => {
  await withRig({}, (rig) => pathCall(rig, {
    title: 'turn-tcp', kinds: ['stun', 'udp', 'tcp'], before: (r) => r.blockDoorUdp(),
  }, (pair, s, line) => {
    assert.equal(pair.local, 'relay', line);
    assert.ok(s.door.lines.some((l) => /TURN over TCP bridged through/.test(l) && /server=\S+:3478 tls=false/.test(l)),
      'the door bridged TURN over TCP');
    return rig.counters('natd', 'filter', 'FORWARD').then((c) => {
      assert.ok(ruleCount(c, /DROP\s+17\b/) > 0, `UDP from the door was dropped at its NAT:\n${c}`);
    });
  }));
});

test('only TCP 443 open at the door NAT: TURN over TLS on 443', { skip, timeout: 90000 }, async () => {
  await withRig({}, (rig) => pathCall(rig, {
    title: 'turns-443', kinds: ['stun', 'udp', 'tcp', 'tls'], before: (r) => r.onlyDoorTcp443(),
  }, (pair, s, line) => {
    assert.equal(pair.local, 'relay', line);
    assert.ok(s.door.lines.some((l) => /TURN over TLS bridged through/.test(l) && /server=\S+:443 tls=true/.test(l)),
      'the door bridged TURN over TLS to port 443');
    return rig.counters('natd', 'filter', 'FORWARD').then((c) => {
      assert.ok(ruleCount(c, /ACCEPT\s+6\b.*dpt:443/) > 0, `TCP 443 from the door passed its NAT:\n${c}`);
      assert.ok(ruleCount(c, /DROP\s+0\b.*\blan\b/) > 0, `everything else from the door was dropped:\n${c}`);
    });
  }));
});
