"""Loss recovery pieces with injected time, as aioquic's test_recovery does."""

from __future__ import annotations

import math
from typing import List, Tuple

import pytest

from lpm.udp.packet import Ack, BadPacket
from lpm.udp.recovery import (
    K_GRANULARITY,
    K_PACKET_THRESHOLD,
    K_PERSISTENT_CONGESTION_THRESHOLD,
    EventsReceiver,
    EventsSender,
    NewReno,
    RangeSet,
    Recovery,
    RttEstimator,
    SentPacket,
    TokenBucket,
)


def test_rtt_first_sample_then_smoothing() -> None:
    # RFC 9002 §5.3.
    rtt = RttEstimator(0.333)
    assert (rtt.smoothed, rtt.var) == (0.333, 0.1665)
    assert rtt.pto(0.025) == pytest.approx(0.333 + 4 * 0.1665 + 0.025)
    rtt.update(0.100)
    assert (rtt.latest, rtt.smoothed, rtt.var, rtt.min) == (0.100, 0.100, 0.050, 0.100)
    rtt.update(0.140, ack_delay=0.020, max_ack_delay=0.025)
    adjusted = 0.120
    assert rtt.var == pytest.approx(0.75 * 0.050 + 0.25 * abs(0.100 - adjusted))
    assert rtt.smoothed == pytest.approx(0.875 * 0.100 + 0.125 * adjusted)
    assert rtt.min == 0.100


def test_rtt_ack_delay_is_capped_and_never_goes_below_min() -> None:
    rtt = RttEstimator()
    rtt.update(0.100)
    rtt.update(0.110, ack_delay=0.050, max_ack_delay=0.025)  # 0.110 - 0.025 < min: not discounted
    assert rtt.smoothed == pytest.approx(0.875 * 0.100 + 0.125 * 0.110)
    rtt.update(0.200, ack_delay=0.050, max_ack_delay=0.025)  # capped at max_ack_delay
    assert rtt.latest == 0.200


def test_loss_delay_is_nine_eighths_of_the_larger_rtt() -> None:
    rtt = RttEstimator()
    rtt.update(0.080)
    rtt.update(0.160)
    assert rtt.loss_delay() == pytest.approx(9 / 8 * 0.160)
    tiny = RttEstimator()
    tiny.update(0.0001)
    assert tiny.loss_delay() == K_GRANULARITY


def test_rangeset_merges_and_reports_highest_first() -> None:
    r = RangeSet()
    for n in [0, 1, 2, 5, 4, 9, 3, 7]:
        assert n not in r
        r.add(n)
        assert n in r
    assert r.descending(10) == [(9, 9), (7, 7), (0, 5)]
    assert r.descending(2) == [(9, 9), (7, 7)]
    r.add(8)
    r.add(6)
    assert r.descending(10) == [(0, 9)]
    assert r.largest == 9 and 10 not in r


def test_rangeset_forgets_old_ranges_and_counts_them_as_seen() -> None:
    r = RangeSet(limit=4)
    for n in range(0, 20, 2):
        r.add(n)
    assert len(r) == 4 and r.floor == 12
    assert 1 in r  # below the floor: taken for a duplicate, a replay can't pass
    assert 13 not in r and 14 in r


def sent(number: int, t: float, size: int = 1000) -> SentPacket:
    return SentPacket(number, t, size)


def recovery(mtu: int = 1200) -> Recovery:
    rec = Recovery(RttEstimator(0.1), NewReno(mtu), 0.025)
    return rec


def send(rec: Recovery, numbers: List[int], t: float) -> None:
    for n in numbers:
        rec.on_sent(sent(n, t))
        rec.largest_sent = n


def deadline_of(rec: Recovery) -> float:
    deadline = rec.deadline()
    assert deadline is not None
    return deadline


def ack(*ranges: Tuple[int, int], delay_us: int = 0) -> Ack:
    return Ack(ranges[0][1], delay_us, tuple(ranges))


def test_packet_threshold_declares_loss() -> None:
    # RFC 9002 §6.1.1: lost once a packet 3 later is acknowledged.
    rec = recovery()
    send(rec, list(range(6)), 0.0)
    acked, lost = rec.on_ack(ack((1, K_PACKET_THRESHOLD - 1)), 0.010)
    assert [p.number for p in acked] == [1, 2] and lost == []
    _, lost = rec.on_ack(ack((K_PACKET_THRESHOLD, K_PACKET_THRESHOLD), (1, 2)), 0.011)
    assert [p.number for p in lost] == [0]
    assert rec.bytes_in_flight == 2000


def test_time_threshold_arms_the_timer_then_declares_loss() -> None:
    rec = recovery()
    send(rec, [0], 0.0)
    send(rec, [1], 0.005)
    _, lost = rec.on_ack(ack((1, 1)), 0.050)
    assert lost == []
    delay = rec.rtt.loss_delay()
    deadline = deadline_of(rec)
    assert deadline == pytest.approx(0.0 + delay)
    assert rec.on_timeout(deadline - 1e-6) == ([], False)
    lost, probe = rec.on_timeout(deadline)  # the very instant counts
    assert [p.number for p in lost] == [0] and not probe
    assert rec.deadline() is None  # nothing in flight


def test_pto_doubles_and_an_ack_resets_it() -> None:
    rec = recovery()
    rec.rtt.update(0.040)
    send(rec, [0], 1.0)
    pto = rec.pto_duration()
    assert pto == pytest.approx(0.040 + 4 * 0.020 + 0.025)
    assert rec.deadline() == pytest.approx(1.0 + pto)
    for count in range(1, 4):
        assert rec.on_timeout(deadline_of(rec)) == ([], True)
        assert rec.pto_count == count
        assert rec.deadline() == pytest.approx(1.0 + pto * 2**count)
    send(rec, [1], 2.0)
    rec.on_ack(ack((1, 1)), 2.05)
    assert rec.pto_count == 0


def test_pto_leaves_out_the_ack_delay_when_an_immediate_ack_was_asked() -> None:
    rec = recovery()
    rec.rtt.update(0.040)
    rec.on_sent(sent(0, 0.0), ack_now=True)
    assert rec.pto_duration() == pytest.approx(0.040 + 4 * 0.020)


def test_ack_of_a_packet_never_sent_is_refused() -> None:
    rec = recovery()
    send(rec, [0, 1], 0.0)
    with pytest.raises(BadPacket) as err:
        rec.on_ack(ack((0, 5)), 0.01)
    assert err.value.counter == "ack_unsent"


def test_rtt_sampled_only_when_the_largest_is_newly_acked() -> None:
    rec = recovery()
    send(rec, [0, 1], 0.0)
    rec.on_ack(ack((1, 1)), 0.030)
    assert rec.rtt.samples == 1 and rec.rtt.latest == pytest.approx(0.030)
    rec.on_ack(ack((0, 1)), 0.500)  # 1 again (old news), 0 newly: no sample
    assert rec.rtt.samples == 1


def test_a_late_repeated_ack_is_no_rtt_sample() -> None:
    # Its first copy was lost; it tells how late the repeat came, not the path.
    rec = recovery()
    send(rec, [0], 0.0)
    rec.on_ack(ack((0, 0), delay_us=900_000), 0.902)
    assert rec.rtt.samples == 0 and rec.bytes_in_flight == 0
    send(rec, [1], 1.0)
    rec.on_ack(ack((1, 1), delay_us=20_000), 1.03)
    assert rec.rtt.samples == 1 and rec.rtt.latest == pytest.approx(0.03)


def test_newreno_slow_start_then_congestion_avoidance() -> None:
    cc = NewReno(1200)
    start = cc.cwnd
    cc.on_acked(sent(0, 0.0, 1200))
    assert cc.cwnd == start + 1200
    cc.on_lost(0.0, 1.0, congestive=True)
    assert cc.cwnd == (start + 1200) / 2 and cc.ssthresh == cc.cwnd
    before = cc.cwnd
    cc.on_lost(0.5, 1.1, congestive=True)  # sent before recovery began: same event
    assert cc.cwnd == before
    cc.on_acked(sent(1, 1.2, 1200))
    assert cc.cwnd == pytest.approx(before + 1200 * 1200 / before)


def test_newreno_random_loss_ends_slow_start_without_halving() -> None:
    cc = NewReno(1200)
    start = cc.cwnd
    cc.on_lost(0.0, 1.0, congestive=False)
    assert cc.cwnd == start and cc.ssthresh == start


def test_recovery_tells_random_loss_from_congestion() -> None:
    rec = recovery()
    for i in range(20):  # a path with no queue: every sample the same
        rec.rtt.update(0.010)
    send(rec, list(range(5)), 1.0)
    rec.on_ack(ack((4, 4)), 1.01)
    assert rec.packets_lost == 2 and rec.cc.halvings == 0  # random loss
    for i in range(10):
        rec.rtt.update(0.050)  # now a queue builds
    send(rec, list(range(5, 10)), 2.0)
    rec.on_ack(ack((9, 9)), 2.06)
    assert rec.packets_lost == 6 and rec.cc.halvings == 1  # 2, 3 and 5, 6


def test_persistent_congestion_collapses_the_window() -> None:
    rec = recovery()
    send(rec, [0], 0.0)
    for _ in range(K_PERSISTENT_CONGESTION_THRESHOLD):
        rec.on_timeout(deadline_of(rec))
    assert rec.cc.cwnd == rec.cc.min_window


def test_token_bucket() -> None:
    bucket = TokenBucket(1000.0, 2000)
    assert bucket.ready_at(2000, 0.0) == 0.0
    bucket.take(2000, 0.0)
    assert bucket.ready_at(500, 0.0) == pytest.approx(0.5, abs=1e-5)
    assert bucket.next_ready(500) == pytest.approx(0.5, abs=1e-5)
    assert bucket.ready_at(500, 0.5) == 0.5
    assert TokenBucket(None, 10).ready_at(10**9, 3.0) == 3.0
    assert TokenBucket(None, 10).next_ready(5) == -math.inf


def test_events_receiver_accounts_gaps_sheds_and_the_tail() -> None:
    counters: dict[str, int] = {}
    r = EventsReceiver(counters)
    assert r.on_events(0, 5, 5, 0.0) == (True, 0)
    assert r.on_events(2, 12, 3, 0.0) == (True, 0)  # seq 1 missing: maybe late
    assert r.deadline(0.05) == 0.0 + 0.05
    assert r.on_events(1, 9, 4, 0.01) == (True, 0)  # it was: nothing lost
    assert r.deadline(0.05) is None
    assert r.on_events(3, 20, 2, 0.02) == (True, 6)  # 6 items shed before it
    assert r.on_events(5, 30, 5, 0.03) == (True, 0)
    assert r.on_timer(0.03 + 0.05, 0.05) == 5  # seq 4 lost: items 21..25
    assert r.on_events(4, 25, 5, 0.09) == (False, 0)  # too late: it was reported
    assert counters == {"events_late": 1}
    assert r.on_events(5, 30, 5, 0.09) == (False, 0) and r.duplicates == 1
    assert r.on_mark(6, 34, 0.1) == 4  # the last items were shed: the mark says so
    assert r.on_mark(8, 40, 0.1) == 0  # two messages may still come
    assert r.on_timer(0.2, 0.05) == 6
    assert (r.items_received, r.items_lost) == (19, 21)


def test_events_are_delivered_in_order_after_their_gaps() -> None:
    """A message past a gap waits for it: delivered when the gap fills, or
    when it is given up; one after a given-up gap is never delivered."""
    r = EventsReceiver({})
    assert r.on_events(0, 1, 1, 0.0, b"a") == (True, 0) and r.take() == [(b"a", 1)]
    assert r.on_events(2, 3, 1, 0.001, b"c") == (True, 0) and r.take() == [], "waits for seq 1"
    assert r.on_events(3, 4, 1, 0.002, b"d") == (True, 0) and r.take() == []
    assert r.on_events(1, 2, 1, 0.003, b"b") == (True, 0)
    assert r.take() == [(b"b", 1), (b"c", 1), (b"d", 1)], "reordered, not lost: all of it, in order"
    assert r.on_events(5, 6, 1, 0.004, b"f") == (True, 0) and r.take() == []
    assert r.on_timer(0.004 + 0.05, 0.05) == 1 and r.take() == [(b"f", 1)], "seq 4 given up"
    assert r.on_events(4, 5, 1, 0.06, b"e") == (False, 0) and r.take() == [], "too late: reported lost"


def test_every_gap_past_the_reorder_delay_is_given_up_at_once() -> None:
    """Heavy loss leaves many gaps: each is given up a reorder delay after the
    first message past it arrived, all in one timer, not one per timer."""
    r = EventsReceiver({})
    for k in range(50):  # every other message lost: seqs 1, 3, ... missing
        assert r.on_events(2 * k, 10 * (2 * k + 1), 10, 0.001 * k) == (True, 0)
    assert r.deadline(0.05) == pytest.approx(0.001 + 0.05), "the first gap is known since seq 2 came"
    # At 0.0755 the gaps before seqs 2..50 (arrived by 0.025) are all due; the
    # later ones are not yet.
    lost = r.on_timer(0.0755, 0.05)
    assert lost == 10 * 25 and r.next_seq == 51
    assert r.deadline(0.05) == pytest.approx(0.026 + 0.05)
    assert r.on_timer(1.0, 0.05) == 10 * 24
    assert (r.items_received, r.items_lost) == (500, 490) and r.deadline(0.05) is None


def test_events_sender_sheds_and_still_counts() -> None:
    s = EventsSender(queue_limit=1000, max_delay=0.5)
    assert s.offer(b"a" * 600, 3, 0.0)
    assert s.offer(b"b" * 600, 4, 0.0)  # over the limit: the oldest goes
    assert (s.items_shed, s.cum, len(s.queue)) == (3, 3, 1)
    assert s.head_size(0.4) == 600
    assert s.pop(0.4) == (0, 7, 4, b"b" * 600)
    s.offer(b"c", 1, 0.5)
    assert s.head_size(1.1) is None  # waited too long: shed, not sent late
    assert (s.items_shed, s.cum) == (4, 8)
    assert s.mark_due_at(0.05) == 0.5 + 0.05  # after the last offer
    s.on_acked((1, 7))
    assert s.mark_due_at(0.05) is not None  # the shed item is not known yet
    s.mark_in_flight = s.top
    assert s.mark_due_at(0.05) is None
    s.on_mark_lost(s.top)
    assert s.mark_due_at(0.05) is not None
    s.on_acked(s.top)
    assert s.mark_due_at(0.05) is None


def test_events_throttle_sheds_evenly_under_trouble() -> None:
    s = EventsSender(queue_limit=1 << 20, max_delay=10.0)
    s.throttle.update(trouble=True)
    s.throttle.update(trouble=True)
    assert s.throttle.value == 8
    admitted = sum(s.offer(b"x", 1, 0.0) for _ in range(320))
    assert admitted == 80 and s.items_shed == 240 and s.cum == 240
    for _ in range(20):
        s.throttle.update(trouble=False)
    assert s.throttle.value == 32 and s.offer(b"x", 1, 0.0)


def test_a_mark_is_due_while_everything_offered_is_shed() -> None:
    s = EventsSender(queue_limit=1 << 20, max_delay=10.0)
    s.throttle.value = 0  # shed all (the throttle itself never goes this low)
    for i in range(100):
        assert not s.offer(b"x", 1, i * 0.01)
    # Not only once the offers stop (0.99 + 0.05): four delays after the first shed.
    assert s.mark_due_at(0.05) == pytest.approx(0.0 + 4 * 0.05)
    assert s.mark_sent() == (0, 100)
    assert s.mark_due_at(0.05) is None
    s.offer(b"x", 1, 1.0)
    assert s.mark_due_at(0.05) == pytest.approx(1.0 + 0.05)
