// The network paths exercised through the NAT rig, shared by the tests and
// the benchmark: NAT kinds, the ICE servers the hub hands out, the door's
// transport policy, and restrictions applied at the door's NAT.
export const NAT_PATHS = [
  { name: 'direct', what: 'direct through two port-preserving NATs (STUN)', rig: {}, kinds: ['stun'] },
  { name: 'symmetric', what: 'door behind a symmetric NAT', rig: { natDoor: 'symmetric' }, kinds: ['stun', 'udp'] },
  { name: 'relay-only', what: 'relay only, TURN over UDP', rig: {}, kinds: ['stun', 'udp'], relayOnly: true },
  { name: 'turn-tcp', what: 'UDP blocked at the door NAT: TURN over TCP', rig: {}, kinds: ['stun', 'udp', 'tcp'], before: (r) => r.blockDoorUdp() },
  { name: 'turns-443', what: 'only TCP 443 open at the door NAT: TURN over TLS on 443', rig: {}, kinds: ['stun', 'udp', 'tcp', 'tls'], before: (r) => r.onlyDoorTcp443() },
];
