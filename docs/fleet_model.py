#!/usr/bin/env python3
"""What a hookd host's lost disk costs, under three ways of running it (docs/scaling.md).

A discrete-event model of one host over a simulated month: events arrive at a steady rate and
fan out to endpoints; every endpoint goes down now and then (outages: exponential gaps,
log-normal lengths) and its deliveries wait, retried, until it is back or their retry schedule
ends. The disk dies at a random instant. For each instant sampled, the model counts

- lost: events acknowledged to the engine whose deliveries never happen;
- resent: deliveries made twice (after a restore or a takeover);
- held: events the durable store must hold for the host (the backlog), at that instant;

for:
- "today": nothing beyond the host's own disk;
- "backup every T": `hookd ctl backup` every T, copied off the host, restored on a new one;
- "backup every T + replay": the same backups, and on a loss the new host's consumer is made
  again from the start of a stream that keeps messages at least T (and no longer than hookd's
  `storage.retention`): what the backup holds comes back as duplicates by id, what came after
  it is taken again;
- "ack when final": a JetStream source whose messages hookd acknowledges only once every
  delivery of the event is final, so the replicated stream holds the unfinished backlog and
  another host's consumer takes it over after `ack_wait`.

Usage: docs/fleet_model.py [--seed N] [--samples N]. Pure Python, no dependencies; the
parameters are the constants below, chosen from the seeds' traffic (see docs/scaling.md).
"""

import argparse
import bisect
import math
import random

RATE = 200.0  # events per second into one host
ENDPOINTS = 40  # endpoints, each subscribed to an equal share of events
FANOUT = 2  # deliveries per event (endpoints of the tenant subscribed to its type)
OUTAGE_GAP_H = 72.0  # mean hours between an endpoint's outages
OUTAGE_MEDIAN_MIN = 20.0  # median outage length, minutes
OUTAGE_SIGMA = 1.2  # log-normal spread of outage lengths
SCHEDULE_END_H = 30.0  # a delivery still failing after this is final (failed)
IN_FLIGHT_S = 0.05  # time from acknowledgement to a normal delivery's success
ACK_WAIT_S = 30.0  # JetStream ack_wait: when another host's consumer gets the messages
DAYS = 30


def outages(rng):
    """Per endpoint: sorted (start, end) seconds of its outages over the month."""
    horizon = DAYS * 86400.0
    out = []
    for _ in range(ENDPOINTS):
        t, spans = 0.0, []
        while True:
            t += rng.expovariate(1.0 / (OUTAGE_GAP_H * 3600.0))
            if t >= horizon:
                break
            length = OUTAGE_MEDIAN_MIN * 60.0 * math.exp(rng.gauss(0.0, OUTAGE_SIGMA))
            spans.append((t, t + length))
            t += length
        out.append(spans)
    return out


def down_since(spans, starts, t):
    """When the outage covering t began, or None if the endpoint is up at t."""
    i = bisect.bisect_right(starts, t) - 1
    if i >= 0 and spans[i][0] <= t < spans[i][1]:
        return spans[i][0]
    return None


def pending_between(spans, starts, a, b):
    """Deliveries to one endpoint acknowledged in [a, b) still not final at b."""
    rate = RATE * FANOUT / ENDPOINTS
    since = down_since(spans, starts, b)
    if since is None:
        # Up: only what is in flight.
        return rate * max(0.0, min(b - a, IN_FLIGHT_S))
    # Down since `since`: everything acknowledged since then is waiting, unless its schedule
    # ran out (older than SCHEDULE_END_H).
    start = max(a, since, b - SCHEDULE_END_H * 3600.0)
    return rate * max(0.0, b - start) + rate * IN_FLIGHT_S


def sample(eps, t, backup_every):
    """(lost, resent, held) deliveries if the disk dies at t."""
    held = sum(pending_between(s, st, 0.0, t) for s, st in eps)
    if backup_every is None:
        return held, 0.0, held
    if backup_every == "final":
        # The stream holds every unfinished event, so nothing is lost; the host that takes it
        # over sends each of those events to all its endpoints again, and the deliveries that
        # had already succeeded (the other FANOUT - 1 of a typical unfinished event) go twice.
        return 0.0, held * (FANOUT - 1), held
    replay = isinstance(backup_every, tuple)
    if replay:
        backup_every = backup_every[1]
    last_backup = math.floor(t / backup_every) * backup_every
    lost = sum(pending_between(s, st, last_backup, t) for s, st in eps)
    # Pending at the backup and delivered since: sent again after the restore.
    at_backup = sum(pending_between(s, st, 0.0, last_backup) for s, st in eps)
    still = sum(
        pending_between(s, st, 0.0, t) - pending_between(s, st, last_backup, t) for s, st in eps
    )
    resent = max(0.0, at_backup - still)
    if replay:
        # Taken again from the stream: the pending ones are delivered once, the rest of what
        # was acknowledged since the backup (already delivered by the lost host) twice.
        since = RATE * FANOUT * (t - last_backup)
        return 0.0, resent + max(0.0, since - lost), held
    return lost, resent, held


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--samples", type=int, default=20000)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    eps = [(s, [a for a, _ in s]) for s in outages(rng)]
    horizon = DAYS * 86400.0
    times = [rng.uniform(SCHEDULE_END_H * 3600.0, horizon) for _ in range(args.samples)]
    print(
        f"one host: {RATE:.0f} events/s, {ENDPOINTS} endpoints, {FANOUT} deliveries per event, "
        f"outages every {OUTAGE_GAP_H:.0f} h per endpoint (median {OUTAGE_MEDIAN_MIN:.0f} min), "
        f"{args.samples} disk deaths sampled over {DAYS} days (seed {args.seed})"
    )
    print(f"{'option':<22} {'lost mean':>10} {'lost p99':>10} {'resent mean':>12} {'resent p99':>11} {'held p99':>10}")
    for name, every in [
        ("today", None),
        ("backup every 24 h", 86400.0),
        ("backup every 1 h", 3600.0),
        ("backup every 5 min", 300.0),
        ("backup 5 min + replay", ("replay", 300.0)),
        ("ack when final", "final"),
    ]:
        rows = [sample(eps, t, every) for t in times]
        def stat(i, q=None):
            v = sorted(r[i] for r in rows)
            return sum(v) / len(v) if q is None else v[min(len(v) - 1, int(q * len(v)))]
        print(
            f"{name:<22} {stat(0):>10.0f} {stat(0, 0.99):>10.0f} {stat(1):>12.0f} "
            f"{stat(1, 0.99):>11.0f} {stat(2, 0.99):>10.0f}"
        )
    print("(deliveries; 'held' is what the host's disk, or the stream, holds at that instant)")


if __name__ == "__main__":
    main()
