// A small internet in network namespaces: the door station and the resident
// each sit behind their own NAT box; a "public" namespace holds the hub
// (`intercomd hub`) and coturn. Nothing leaves the namespaces.
//
//   door 10.97.1.2 ── natd (lan 10.97.1.1 | wan 198.18.1.2) ──┐
//                                                          public 198.18.1.1 / 198.18.2.1
//   resident 10.97.2.2 ── natr (lan 10.97.2.1 | wan 198.18.2.2) ──┘   lo: 198.18.0.1 coturn
//                                                                        198.18.0.2 hub
//
// Each NAT box masquerades on its wan side and drops unsolicited inbound NEW
// traffic (without that rule a packet to the box's own public address that
// matches no mapping is handed to the box itself, and the NAT misbehaves).
// `nat: 'preserving'` keeps source ports where it can (endpoint-independent
// mapping in practice); `nat: 'symmetric'` picks a random port per
// destination (`MASQUERADE --random-fully`), so a STUN-learnt mapping is
// useless to any other peer.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { Netns, httpRequest } from './netns.mjs';
import { onCleanup } from './cleanup.mjs';
import { launchChromium, openPage } from './browser.mjs';
import { runSync, waitFor } from './util.mjs';

let rigCounter = 0;

function run(cmd, args, timeout = 15000) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\n${cmd} ${args.join(' ')}\n${stderr}`;
        reject(err);
      } else {
        resolve(stdout);
      }
    });
  });
}

/** True when iptables (with NAT support) and coturn are installed. */
export function natRigSkipReason() {
  for (const bin of ['/usr/sbin/iptables', '/usr/bin/turnserver', '/usr/bin/openssl']) {
    if (!fs.existsSync(bin)) return `${bin} not installed`;
  }
  return false;
}

/** A namespace of the rig: a Netns without the per-test veth pair. */
function rigNs(name, dir) {
  const ns = Object.create(Netns.prototype);
  Object.assign(ns, { n: 0, name, dir, procs: new Set(), destroyed: false });
  return ns;
}

export const ADDR = {
  door: '10.97.1.2',
  natdLan: '10.97.1.1',
  natdWan: '198.18.1.2',
  resident: '10.97.2.2',
  natrLan: '10.97.2.1',
  natrWan: '198.18.2.2',
  pubToDoor: '198.18.1.1',
  pubToRes: '198.18.2.1',
  turn: '198.18.0.1',
  hub: '198.18.0.2',
};

export class NatRig {
  constructor({ natDoor = 'preserving', natResident = 'preserving' } = {}) {
    const prefix = process.env.E2E_NETNS_PREFIX || 'ic-net';
    const net = process.env.E2E_NET_PREFIX || '10.97';
    this.addr = Object.fromEntries(Object.entries(ADDR).map(([k, v]) => [k, v.replace(/^10\.97\./, `${net}.`)]));
    this.base = `${prefix}-${process.pid}-${rigCounter++}`;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${this.base}-`));
    this.natDoor = natDoor;
    this.natResident = natResident;
    this.ns = {};
    for (const role of ['door', 'natd', 'pub', 'natr', 'res']) this.ns[role] = rigNs(`${this.base}-${role}`, this.dir);
    this.logs = [];
    this.browsers = [];
    this.pages = [];
  }

  static async create(opts) {
    const rig = new NatRig(opts);
    rig.cancelCleanup = onCleanup(`nat rig ${rig.base}`, () => rig.destroySync());
    await rig.build();
    return rig;
  }

  file(name) { return path.join(this.dir, name); }

  /** `ip netns exec <ns> cmd args…` */
  exec(role, cmd, ...args) { return run('ip', ['netns', 'exec', this.ns[role].name, cmd, ...args]); }

  ipt(role, ...args) { return this.exec(role, 'iptables', '-w', '5', ...args); }

  async build() {
    const a = this.addr;
    for (const ns of Object.values(this.ns)) {
      runSync('ip', ['netns', 'del', ns.name]);
      await run('ip', ['netns', 'add', ns.name]);
      await run('ip', ['netns', 'exec', ns.name, 'ip', 'link', 'set', 'lo', 'up']);
    }
    // veth pairs, created inside one namespace with the peer moved straight
    // into the other: nothing appears in the host's namespace.
    const link = async (roleA, ifA, addrA, roleB, ifB, addrB) => {
      await this.exec(roleA, 'ip', 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', this.ns[roleB].name);
      await this.exec(roleA, 'ip', 'addr', 'add', `${addrA}/24`, 'dev', ifA);
      await this.exec(roleB, 'ip', 'addr', 'add', `${addrB}/24`, 'dev', ifB);
      await this.exec(roleA, 'ip', 'link', 'set', ifA, 'up');
      await this.exec(roleB, 'ip', 'link', 'set', ifB, 'up');
    };
    await link('natd', 'lan', a.natdLan, 'door', 'eth0', a.door);
    await link('natd', 'wan', a.natdWan, 'pub', 'tod', a.pubToDoor);
    await link('natr', 'lan', a.natrLan, 'res', 'eth0', a.resident);
    await link('natr', 'wan', a.natrWan, 'pub', 'tor', a.pubToRes);
    await this.exec('pub', 'ip', 'addr', 'add', `${a.turn}/32`, 'dev', 'lo');
    await this.exec('pub', 'ip', 'addr', 'add', `${a.hub}/32`, 'dev', 'lo');
    await this.exec('door', 'ip', 'route', 'add', 'default', 'via', a.natdLan);
    await this.exec('res', 'ip', 'route', 'add', 'default', 'via', a.natrLan);
    await this.exec('natd', 'ip', 'route', 'add', 'default', 'via', a.pubToDoor);
    await this.exec('natr', 'ip', 'route', 'add', 'default', 'via', a.pubToRes);
    for (const r of ['natd', 'natr', 'pub']) await this.exec(r, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    await this.natBox('natd', this.natDoor);
    await this.natBox('natr', this.natResident);
  }

  async natBox(role, kind) {
    const masq = kind === 'symmetric' ? ['--random-fully'] : [];
    await this.ipt(role, '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan', '-j', 'MASQUERADE', ...masq);
    // Replies and related ICMP come back in; anything else from outside is dropped.
    await this.ipt(role, '-A', 'FORWARD', '-i', 'wan', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
    await this.ipt(role, '-A', 'FORWARD', '-i', 'wan', '-j', 'DROP');
    await this.ipt(role, '-A', 'INPUT', '-i', 'wan', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
    await this.ipt(role, '-A', 'INPUT', '-i', 'wan', '-j', 'DROP');
  }

  /** The door's NAT drops every UDP datagram from the door's LAN. */
  blockDoorUdp() { return this.ipt('natd', '-I', 'FORWARD', '1', '-i', 'lan', '-p', 'udp', '-j', 'DROP'); }

  /** The door's NAT passes only TCP to port 443 from the door's LAN. */
  async onlyDoorTcp443() {
    await this.ipt('natd', '-I', 'FORWARD', '1', '-i', 'lan', '-j', 'DROP');
    await this.ipt('natd', '-I', 'FORWARD', '1', '-i', 'lan', '-p', 'tcp', '--dport', '443', '-j', 'ACCEPT');
  }

  /** Cut (true) or restore (false) the door's uplink in both directions. */
  async doorUplink(up) {
    const op = up ? '-D' : '-I';
    const pos = up ? [] : ['1'];
    await this.ipt('natd', op, 'FORWARD', ...pos, '-i', 'lan', '-j', 'DROP');
    await this.ipt('natd', op, 'FORWARD', ...pos, '-i', 'wan', '-j', 'DROP');
  }

  /**
   * Impair the door's link at its NAT box, both directions, every packet the
   * box forwards for the door: `lossPct` % dropped at random (iptables
   * `-m statistic --mode random`), the rest held for a random delay drawn
   * uniformly from [delayMinMs, delayMaxMs] by the NFQUEUE shim
   * `lib/nfq_delay.py` (the kernel has no `tc netem`). Both rules sit in the
   * mangle table's FORWARD chain: a packet the shim lets go continues with
   * the next netfilter hook, so the NAT's own filter rules still apply.
   * Without a running shim the queued packets are dropped (no
   * `--queue-bypass`): a broken shim cannot pass for a clean link.
   * Returns { stop(): Promise<figures>, counters(): Promise<{ dropped, queued }> }.
   */
  async impairDoorLink({ lossPct = 5, delayMinMs = 0, delayMaxMs = 40, queue = 7 } = {}) {
    const shimPath = new URL('./nfq_delay.py', import.meta.url).pathname;
    const shim = this.spawn('natd', 'nfq-delay', '/usr/bin/python3',
      [shimPath, '--queue', String(queue), '--min-ms', String(delayMinMs), '--max-ms', String(delayMaxMs)]);
    await waitFor(() => {
      if (shim.exitInfo) throw new Error(`the delay shim exited ${JSON.stringify(shim.exitInfo)}: ${shim.lines.join('\n')}`);
      return shim.lines.includes('ready');
    }, { timeout: 10000, interval: 50, message: 'the delay shim to bind its queue' });
    // Counting only, kept after stop() for the diagnostics of a failure: UDP
    // the door sends and UDP arriving for it, before loss and delay.
    await this.ipt('natd', '-t', 'mangle', '-A', 'PREROUTING', '-i', 'lan', '-p', 'udp');
    await this.ipt('natd', '-t', 'mangle', '-A', 'PREROUTING', '-i', 'wan', '-p', 'udp');
    await this.ipt('natd', '-t', 'mangle', '-A', 'FORWARD', '-m', 'statistic', '--mode', 'random',
      '--probability', String(lossPct / 100), '-j', 'DROP');
    await this.ipt('natd', '-t', 'mangle', '-A', 'FORWARD', '-j', 'NFQUEUE', '--queue-num', String(queue));
    const counters = async () => {
      const listing = await this.counters('natd', 'mangle', 'FORWARD');
      const rows = listing.split('\n').filter((l) => /^\s*\d+\s+\d+/.test(l));
      const n = (re) => { const r = rows.find((l) => re.test(l)); return r ? Number(r.trim().split(/\s+/)[0]) : -1; };
      return { dropped: n(/\bDROP\b/), queued: n(/\bNFQUEUE\b/), listing };
    };
    const stop = async () => {
      // Rules first, so no packet is queued to a shim that is gone.
      await this.ipt('natd', '-t', 'mangle', '-F', 'FORWARD');
      process.kill(-shim.pid, 'SIGTERM');
      await Promise.race([shim.exited, new Promise((r) => setTimeout(r, 5000))]);
      const line = shim.lines.find((l) => l.startsWith('NFQ_DELAY '));
      if (!line) throw new Error(`the delay shim gave no figures (exit ${JSON.stringify(shim.exitInfo)}): ${shim.lines.join('\n')}`);
      return JSON.parse(line.slice('NFQ_DELAY '.length));
    };
    return { stop, counters, shim };
  }

  /** Start a process in one of the rig's namespaces; its log is kept for diagnostics. */
  spawn(role, label, cmd, args, opts = {}) {
    const logFile = this.file(`${label}.log`);
    const child = this.ns[role].spawn(cmd, args, { ...opts, logFile, name: label });
    this.logs.push({ label, file: logFile, child });
    return child;
  }

  /** Chromium in the given namespace (`door` or `res`). */
  async browser(role, opts = {}) {
    const b = await launchChromium(this.ns[role], { extraArgs: ['--ignore-certificate-errors'], ...opts });
    this.browsers.push(b);
    return b;
  }

  async page(browser, url, label) {
    const p = await openPage(browser, url, { label });
    this.pages.push(p);
    return p;
  }

  /**
   * A CA and a certificate for the TURN server's address, made with openssl.
   * Returns { ca, cert, key } paths.
   */
  async makeTurnCert() {
    const ca = this.file('ca.pem');
    const caKey = this.file('ca.key');
    const cert = this.file('turn.pem');
    const key = this.file('turn.key');
    const csr = this.file('turn.csr');
    const ext = this.file('turn.ext');
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=intercomd test CA']);
    await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', csr, '-subj', `/CN=${this.addr.turn}`]);
    fs.writeFileSync(ext, `subjectAltName=IP:${this.addr.turn}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial',
      '-out', cert, '-days', '2', '-extfile', ext]);
    return { ca, cert, key };
  }

  /**
   * coturn in the public namespace: STUN and TURN on UDP/TCP 3478, TURN over
   * TLS on TCP 443, relaying to public addresses only. Long-term
   * credentials, or with `{ sharedSecret: true }` the TURN REST scheme
   * (`--use-auth-secret`): clients must present credentials derived from a
   * secret shared with the hub. Returns { child, user, password,
   * passwordFile, secretFile, ca }.
   */
  async startTurn({ sharedSecret = false } = {}) {
    const { ca, cert, key } = await this.makeTurnCert();
    const user = 'intercom';
    const password = `pw${Math.random().toString(36).slice(2, 12)}`;
    const passwordFile = this.file('turn-credential');
    fs.writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
    const secretFile = sharedSecret ? this.file('turn-secret') : undefined;
    if (secretFile) fs.writeFileSync(secretFile, `s${Math.random().toString(36).slice(2, 14)}\n`, { mode: 0o600 });
    const auth = secretFile
      // -v: session lines name the user of each allocation.
      ? ['--use-auth-secret', `--static-auth-secret=${fs.readFileSync(secretFile, 'utf8').trim()}`, '-v']
      : ['--lt-cred-mech', `--user=${user}:${password}`];
    const net = (process.env.E2E_NET_PREFIX || '10.97').split('.')[0];
    const child = this.spawn('pub', 'coturn', '/usr/bin/turnserver', [
      '-n', '--no-cli', '--log-file=stdout', '--simple-log', '--no-stdout-log=false',
      `--listening-ip=${this.addr.turn}`, `--relay-ip=${this.addr.turn}`,
      '--listening-port=3478', '--tls-listening-port=443', '--alt-listening-port=0', '--alt-tls-listening-port=0',
      '--min-port=50000', '--max-port=50999',
      `--cert=${cert}`, `--pkey=${key}`, '--no-dtls',
      ...auth, '--realm=intercom.test', '--fingerprint',
      // The rig's private ranges are never relay peers.
      `--denied-peer-ip=${net}.0.0.0-${net}.255.255.255`,
      '--denied-peer-ip=172.16.0.0-172.31.255.255', '--denied-peer-ip=192.168.0.0-192.168.255.255',
      '--no-multicast-peers', '--pidfile=' + this.file('turnserver.pid'), `--userdb=${this.file('turndb')}`,
    ]);
    await waitFor(async () => {
      if (child.exitInfo) throw new Error(`coturn exited ${JSON.stringify(child.exitInfo)}: ${child.lines.slice(-20).join('\n')}`);
      const tcp = await this.exec('pub', 'ss', '-Hltn');
      const udp = await this.exec('pub', 'ss', '-Hlun');
      return tcp.includes(`${this.addr.turn}:443`) && tcp.includes(`${this.addr.turn}:3478`) && udp.includes(`${this.addr.turn}:3478`);
    }, { timeout: 10000, interval: 100, message: 'coturn to listen' });
    this.turn = { child, user, password, passwordFile, secretFile, ca };
    return this.turn;
  }

  /** Packets counted by iptables rules in a chain of a NAT box (`-L -v -x`). */
  async counters(role, table, chain) {
    return this.ipt(role, '-t', table, '-L', chain, '-v', '-x', '-n');
  }

  dump(err) {
    const out = [`\n===== ${this.base}: FAILED: ${err && (err.stack || err.message)}`];
    for (const l of this.logs) {
      let text = '';
      try { text = fs.readFileSync(l.file, 'utf8'); } catch { text = l.child.lines.join('\n'); }
      const lines = text.split('\n');
      const tail = lines.length > 300 ? [`… (${lines.length - 300} earlier lines)`, ...lines.slice(-300)] : lines;
      out.push(`----- ${l.label} log (${l.file}) exit=${JSON.stringify(l.child.exitInfo)}\n${tail.join('\n')}`);
    }
    for (const p of this.pages) out.push(`----- ${p.label} console\n${p.console.slice(-200).join('\n')}`);
    for (const role of ['natd', 'natr']) {
      out.push(`----- ${role} iptables\n${runSync('ip', ['netns', 'exec', this.ns[role].name, 'iptables-save', '-c'])}`);
    }
    process.stderr.write(out.join('\n') + '\n');
  }

  destroySync() {
    for (const ns of Object.values(this.ns)) {
      try { ns.destroySync(); } catch { /* keep going */ }
    }
  }

  async close({ keep = false } = {}) {
    for (const b of this.browsers) {
      try { await Promise.race([b.close(), new Promise((r) => setTimeout(r, 5000))]); } catch { /* ignore */ }
    }
    for (const ns of Object.values(this.ns)) {
      for (const child of [...ns.procs]) await ns.kill(child, { graceMs: 2000 });
    }
    if (this.cancelCleanup) this.cancelCleanup();
    else this.destroySync();
    if (!keep && !process.env.E2E_KEEP) {
      try { fs.rmSync(this.dir, { recursive: true, force: true }); } catch { /* ignore */ }
    } else {
      process.stderr.write(`${this.base}: artifacts kept in ${this.dir}\n`);
    }
  }
}

/** Run `body(rig)` on a fresh rig; diagnostics on failure; teardown always. */
export async function withRig(opts, body) {
  const rig = await NatRig.create(opts);
  let failed = false;
  try {
    return await body(rig);
  } catch (err) {
    failed = true;
    rig.dump(err);
    throw err;
  } finally {
    await rig.close({ keep: failed });
  }
}

export { httpRequest };
