#!/usr/bin/env python3
"""Delay shim for the NAT rig: holds every packet of an NFQUEUE queue for a
random time, then lets it go. The kernel in CI has no `tc netem`; an
iptables rule `-j NFQUEUE --queue-num N` hands packets to this program over
netlink (NETLINK_NETFILTER, the nfnetlink_queue subsystem) and the packet
moves on only when the verdict comes back.

Delay distribution: each packet independently waits a time drawn uniformly
from [min_ms, max_ms] (default 0..40 ms: mean 20 ms, jitter +/-20 ms around
it). Verdicts are issued in order of their due time, not of arrival, so
packets are reordered as on a real jittery path.

Only the standard library: the netlink messages are packed by hand
(linux/netfilter/nfnetlink_queue.h). Runs until SIGTERM or SIGINT, then
prints one JSON line of figures (packets, delay mean/min/max in ms, how
late the verdicts were against their due time) and exits 0. Prints `ready`
once the queue is bound. Any netlink error is fatal (exit 1): without the
shim the queued packets are dropped, so a broken shim cannot go unnoticed.

Usage: nfq_delay.py --queue N [--min-ms 0] [--max-ms 40] [--seed S]
"""

import argparse
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
NLA_F_MASK = 0x3FFF  # attribute type without the nested/byte-order flags


def align4(n):
    return (n + 3) & ~3


def attr(kind, payload):
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (align4(len(payload)) - len(payload))


class Queue:
    def __init__(self, num):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))

    def message(self, msg_type, attrs, flags=NLM_F_REQUEST, family=socket.AF_UNSPEC):
        self.seq += 1
        body = struct.pack("=BBH", family, 0, socket.htons(self.num)) + b"".join(attrs)
        kind = (NFNL_SUBSYS_QUEUE << 8) | msg_type
        return struct.pack("=IHHII", 16 + len(body), kind, flags, self.seq, 0) + body

    def request(self, msg_type, attrs):
        """Send a config message and wait for its netlink acknowledgement."""
        self.sock.send(self.message(msg_type, attrs, NLM_F_REQUEST | NLM_F_ACK))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if not r:
                continue
            data = self.sock.recv(65536)
            for kind, payload in split(data):
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload, 0)
                    if code != 0:
                        raise OSError(-code, f"nfqueue config: {os.strerror(-code)}")
                    return
        raise TimeoutError("no acknowledgement from nfnetlink_queue")

    def bind(self, maxlen):
        cmd = struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)
        self.request(NFQNL_MSG_CONFIG, [attr(NFQA_CFG_CMD, cmd)])
        params = struct.pack("!IB", 0, NFQNL_COPY_META)
        self.request(NFQNL_MSG_CONFIG, [attr(NFQA_CFG_PARAMS, params),
                                        attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))])

    def verdict(self, packet_id, verdict=NF_ACCEPT):
        hdr = struct.pack("!II", verdict, packet_id)
        self.sock.send(self.message(NFQNL_MSG_VERDICT, [attr(NFQA_VERDICT_HDR, hdr)]))


def split(data):
    """(type, payload) of each netlink message in a datagram."""
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16 or off + length > len(data):
            break
        yield kind, data[off + 16:off + length]
        off += align4(length)


def packet_id(payload):
    """The packet id from an NFQNL_MSG_PACKET payload (after nfgenmsg)."""
    off = 4
    while off + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, off)
        if length < 4:
            break
        if kind & NLA_F_MASK == NFQA_PACKET_HDR:
            (pid,) = struct.unpack_from("!I", payload, off + 4)
            return pid
        off += align4(length)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--min-ms", type=float, default=0.0)
    ap.add_argument("--max-ms", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--maxlen", type=int, default=4096)
    args = ap.parse_args()
    if not 0 <= args.min_ms <= args.max_ms <= 10000:
        ap.error("need 0 <= --min-ms <= --max-ms <= 10000")
    rng = random.Random(args.seed)

    q = Queue(args.queue)
    q.bind(args.maxlen)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)

    held = []  # heap of (due, arrival, packet id)
    stats = {"packets": 0, "delay_sum_ms": 0.0, "delay_min_ms": None, "delay_max_ms": 0.0,
             "late_max_ms": 0.0, "reordered": 0, "enobufs": 0}
    last_released_arrival = 0.0
    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            due, arrival, pid = heapq.heappop(held)
            q.verdict(pid)
            now = time.monotonic()
            delay = (now - arrival) * 1000
            stats["packets"] += 1
            stats["delay_sum_ms"] += delay
            stats["delay_max_ms"] = max(stats["delay_max_ms"], delay)
            stats["delay_min_ms"] = delay if stats["delay_min_ms"] is None else min(stats["delay_min_ms"], delay)
            stats["late_max_ms"] = max(stats["late_max_ms"], (now - due) * 1000)
            if arrival < last_released_arrival:
                stats["reordered"] += 1
            last_released_arrival = max(last_released_arrival, arrival)
        wait = max(0.0, held[0][0] - time.monotonic()) if held else 0.2
        try:
            r, _, _ = select.select([q.sock], [], [], wait)
        except InterruptedError:
            continue
        if not r:
            continue
        try:
            data = q.sock.recv(65536)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                # The kernel dropped queue messages we could not read in
                # time: count it (those packets are lost, like a full queue).
                stats["enobufs"] += 1
                continue
            raise
        arrival = time.monotonic()
        for kind, payload in split(data):
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", payload, 0)
                if code != 0:
                    raise OSError(-code, f"nfqueue: {os.strerror(-code)}")
                continue
            if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            pid = packet_id(payload)
            if pid is None:
                continue
            delay = rng.uniform(args.min_ms, args.max_ms) / 1000
            heapq.heappush(held, (arrival + delay, arrival, pid))
    # Let whatever is still held go, so nothing is stranded on exit.
    for _, _, pid in held:
        q.verdict(pid)
    n = stats["packets"]
    out = {
        "packets": n,
        "delay_mean_ms": round(stats["delay_sum_ms"] / n, 2) if n else None,
        "delay_min_ms": round(stats["delay_min_ms"], 2) if n else None,
        "delay_max_ms": round(stats["delay_max_ms"], 2),
        "late_max_ms": round(stats["late_max_ms"], 2),
        "reordered": stats["reordered"],
        "enobufs": stats["enobufs"],
        "released_at_exit": len(held),
    }
    print("NFQ_DELAY " + json.dumps(out), flush=True)


if __name__ == "__main__":
    try:
        main()
    except (OSError, TimeoutError) as e:
        print(f"nfq_delay: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
