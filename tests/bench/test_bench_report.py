"""The arithmetic and the bookkeeping of ``zcluster bench``, without processes."""

from __future__ import annotations

import pytest

from zcluster import DeliveryGuarantee
from zcluster.bench import ALL_GROUPS, GROUPS, membership, report, scenarios, workload
from zcluster.bench.main import parse_cluster_sizes, parse_groups
from zcluster.bench.runner import FamilyRun
from zcluster.bench.samples import (
    Sample,
    best_burst,
    delivery_sample,
    latency_samples,
    order_problems,
)
from zcluster.bench.stats import (
    Spread,
    megabytes_per_s,
    paired_ratios,
    percentile,
    rate_per_s,
    spread,
)
from zcluster.errors import ConfigError


def test_spread_is_median_and_range_of_present_values() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert spread([4.0, 1.0]) == Spread(2.5, 1.0, 4.0)
    assert spread([None, None]) is None
    assert spread([]) is None


def test_ratios_are_paired_by_repetition_then_summarized() -> None:
    zcluster = [50.0, 60.0, None, 30.0]
    raw = [100.0, 300.0, 100.0, None]
    ratios = paired_ratios(zcluster, raw)
    assert ratios == [0.5, 0.2]
    # the median of paired ratios, not the ratio of medians (55 / 200 = 0.275)
    assert spread(ratios) == Spread(pytest.approx(0.35), 0.2, 0.5)


def test_a_missing_or_zero_baseline_gives_no_ratio() -> None:
    assert paired_ratios([1.0, 2.0], [0.0, None]) == []


def test_paired_ratios_need_aligned_repetitions() -> None:
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_rates() -> None:
    assert rate_per_s(1000, 10.0, 10.5) == 2000.0
    assert rate_per_s(5, 3.0, 3.0) == 0.0
    assert megabytes_per_s(2000.0, 1_000_000) == 2000.0
    assert megabytes_per_s(100_000.0, 92) == pytest.approx(9.2)


def test_delivery_sample_counts_every_receiver_from_the_first_send() -> None:
    results = [
        {"received": 100, "last_arrival_s": 11.0},
        {"received": 90, "last_arrival_s": 12.0},
    ]
    sample = delivery_sample(10.0, results, 100)
    assert sample.value == 190 / 2.0
    assert sample.lost == 10
    assert sample.extra["per_receiver_msgs_s"] == [45, 100]


def test_best_burst_keeps_the_fastest_burst_and_what_went_wrong_in_all() -> None:
    bursts = [
        Sample(300.0, lost=1, duplicates=0, problems=("1 lost",)),
        Sample(100.0, lost=0, duplicates=2),
        Sample(200.0, lost=2, duplicates=None, problems=("2 lost",)),
    ]
    best = best_burst(bursts)
    assert best.value == 300.0
    assert best.lost == 3
    assert best.duplicates == 2
    assert best.problems == ("1 lost", "2 lost")
    assert best.extra["bursts_msgs_s"] == [300, 100, 200]
    assert best_burst([Sample(None), Sample(1.0)]).value == 1.0


def test_what_each_guarantee_promises_about_duplicates_and_order() -> None:
    g = DeliveryGuarantee
    assert order_problems(g.AT_LEAST_ONCE, 3, 2) == []
    assert order_problems(g.AT_MOST_ONCE, 1, 2) == ["1 duplicates"]
    assert order_problems(g.EXACTLY_ONCE, 0, 2) == []
    assert order_problems(g.ORDERED, 1, 2) == ["1 duplicates", "2 out of order"]


def test_latency_samples_in_microseconds() -> None:
    samples = latency_samples([1000 * v for v in range(1, 101)])
    assert samples["p50"].value == 50.0
    assert samples["p99"].value == 99.0


def _family_run() -> FamilyRun:
    family = scenarios.Family(
        "direct",
        "direct send",
        (
            scenarios.Row("AT_LEAST_ONCE", "direct send AT_LEAST_ONCE", "msg/s", "delivered"),
            scenarios.Row("latency", "something absolute", "s", lower_is_better=True),
        ),
        zcluster=dict,
    )
    return FamilyRun(
        family,
        zcluster=[
            {"AT_LEAST_ONCE": Sample(40.0, lost=0, duplicates=2), "latency": Sample(1.5)},
            None,
            {
                "AT_LEAST_ONCE": Sample(30.0, lost=3, problems=("3 never reached the handler",)),
                "latency": Sample(None, note="did not happen in time"),
            },
        ],
        raw=[
            {"delivered": Sample(100.0)},
            {"delivered": Sample(90.0)},
            {"delivered": Sample(50.0)},
        ],
        errors=["rep 2 zcluster: something broke"],
    )


def test_row_reports_pair_each_row_with_its_baseline() -> None:
    guaranteed, absolute = report.summarize([_family_run()])
    assert guaranteed.zcluster_values == [40.0, None, 30.0]
    assert guaranteed.raw_values == [100.0, 90.0, 50.0]
    assert guaranteed.ratios == [0.4, 0.6]
    assert guaranteed.lost == 3
    assert guaranteed.duplicates == 2
    assert guaranteed.problems == ["3 never reached the handler"]
    assert absolute.raw is None
    assert absolute.ratios == []
    assert absolute.zcluster_values == [1.5, None, None]
    assert absolute.notes == ["did not happen in time"]
    assert report.failed([guaranteed, absolute])


def test_table_and_json_show_medians_ratios_and_what_went_wrong() -> None:
    reports = report.summarize([_family_run()])
    text = report.table(reports)
    header, guaranteed, absolute = text.splitlines()
    assert header.split()[:4] == ["scenario", "unit", "zcluster", "raw"]
    assert "0.50x" in guaranteed and "0.40-0.60" in guaranteed
    assert "3 never reached the handler" in guaranteed and "1 session(s) FAILED" in guaranteed
    assert absolute.split()[2:7] == ["s", "1.50", "-", "-", "-"]
    row = report.row_json(reports[0])
    assert row["zcluster"]["values"] == [40.0, None, 30.0]
    assert row["zcluster"]["median"] == 35.0
    assert row["raw"]["median"] == 90.0
    assert row["ratio"] == {"values": [0.4, 0.6], "median": 0.5, "min": 0.4, "max": 0.6}
    assert row["zcluster"]["samples"][1] is None
    assert row["zcluster"]["samples"][0]["duplicates"] == 2
    assert report.row_json(reports[1])["raw"] is None
    assert report.row_json(reports[1])["ratio"] is None


def test_a_clean_run_has_not_failed() -> None:
    run = _family_run()
    run.errors.clear()
    run.zcluster[2] = None
    assert not report.failed(report.summarize([run]))


def test_sizes_follow_the_message_count() -> None:
    sizes = workload.Sizes.for_run(10_000, quick=False)
    assert sizes.bursts_count == 3
    assert sizes.round_trips_count == 5_000
    assert sizes.pubsub_messages_count == 30_000
    assert sizes.payload_messages_count(100) == 30_000
    assert sizes.payload_messages_count(10_000) == 15_000
    assert sizes.payload_messages_count(1_000_000) == 150
    assert sizes.fanout_messages_count == 15_000
    assert sizes.warmup_for(10_000) == 500
    assert sizes.warmup_for(100) == 10
    assert sizes.pending_count == 5_000
    quick = workload.Sizes.for_run(100, quick=True)
    assert quick.bursts_count == 1
    assert quick.payload_messages_count(1_000_000) == 10


def test_every_group_has_families_with_unique_titles() -> None:
    families = scenarios.families(ALL_GROUPS, workload.Sizes.for_run(1_000, quick=True), (3, 5))
    assert {f.group for f in families} == set(ALL_GROUPS)
    titles = [row.title for f in families for row in f.rows]
    assert len(titles) == len(set(titles))
    assert [f.name for f in families if f.group == "membership"] == [
        "membership of 3",
        "membership of 5",
    ]
    without_raw = [f.name for f in families if f.raw is None and f.group != "membership"]
    assert without_raw == ["jwt pub/sub 1->4", "jwt direct send"]


def test_parse_options() -> None:
    assert parse_groups(" rtt,pubsub,rtt ") == ("rtt", "pubsub")
    assert parse_groups("security") == ("security",)
    assert "security" not in GROUPS  # run only when asked for
    assert parse_cluster_sizes("3,10,32") == (3, 10, 32)
    for bad in ("", "pubsub,bogus"):
        with pytest.raises(ConfigError):
            parse_groups(bad)
    for bad in ("1", "3,x", "", "1000"):
        with pytest.raises(ConfigError):
            parse_cluster_sizes(bad)


def test_a_cluster_that_does_not_converge_is_a_result() -> None:
    reports = [
        {"at_s": 10.5, "up_count": 2},
        {"at_s": None, "up_count": 1},
        {"at_s": 10.2, "up_count": 2},
    ]
    late = membership.converge_sample(reports, 10.0, 3)
    assert late.value is None
    assert late.note == "1 of 3 did not see all others up within 30 s (one saw 1 of 2)"
    reports[1] = {"at_s": 10.7, "up_count": 2}
    assert membership.converge_sample(reports, 10.0, 3).value == pytest.approx(0.7)


def test_a_crash_not_seen_everywhere_is_a_result() -> None:
    downs = [{"at_s": 21.9}, {"at_s": None}, {"at_s": 22.1}]
    sample = membership.detect_sample(downs, 20.0, 4, {"processes_count": 4})
    assert sample.value is None
    assert sample.note == "1 of 3 did not see it down within 15 s"
    assert sample.extra["saw_down_count"] == 2
    assert sample.extra["first_s"] == pytest.approx(1.9)
    downs[1] = {"at_s": 22.0}
    assert membership.detect_sample(downs, 20.0, 4, {}).value == pytest.approx(2.1)
