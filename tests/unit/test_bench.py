"""bench/: the pure parts (metric parsing, request attribution, statistics, tables, workload)."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add the cwd
    sys.path.insert(0, str(REPO_ROOT))

from bench import promtext, report, stats, table, targets, workload  # noqa: E402
from bench.attribution import (  # noqa: E402
    NON_RESOURCE,
    OTHER,
    RESOURCES,
    VERBS,
    Requests,
    Snapshot,
    apiserver_cpu,
    flow_schemas,
    parse_schema,
    schema_name,
    subject_requests,
)
from bench.audit import SUBJECT_USER, AuditLog, wasted  # noqa: E402
from bench.machine import cpu_model, mem_total_kib  # noqa: E402
from bench.procs import parse_proc_stat_cpu, parse_proc_status  # noqa: E402
from bench.run import parse_sizes  # noqa: E402

# --- Prometheus text --------------------------------------------------------------------------
METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",dry_run="",resource="pods",verb="LIST"} 7
apiserver_request_total{code="200",dry_run="All",resource="pods",verb="APPLY"} 3
apiserver_request_total_seconds_bucket{le="0.1"} 99
apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt",priority_level="exempt"} 641
apiserver_flowcontrol_dispatched_requests_total{flow_schema="jupyternetes-bench-list.pods"} 2
process_start_time_seconds 1.7e+09
"""


def test_samples_takes_exact_names_with_their_labels() -> None:
    found = promtext.samples(METRICS, ["apiserver_request_total", "process_start_time_seconds"])
    assert found["apiserver_request_total"] == {
        (("code", "200"), ("dry_run", ""), ("resource", "pods"), ("verb", "LIST")): 7.0,
        (("code", "200"), ("dry_run", "All"), ("resource", "pods"), ("verb", "APPLY")): 3.0,
    }
    assert found["process_start_time_seconds"] == {(): 1.7e9}


def test_labels_unescape_quotes_backslashes_and_newlines() -> None:
    assert promtext.parse_labels(r'a="x\"y",b="c\\d",c="e\nf",') == (
        ("a", 'x"y'),
        ("b", "c\\d"),
        ("c", "e\nf"),
    )


def test_labels_reject_garbage() -> None:
    with pytest.raises(ValueError):
        promtext.parse_labels('a="1",b=2')


def test_values_include_prometheus_specials_and_timestamps_are_ignored() -> None:
    found = promtext.samples('x{a="1"} +Inf 1700000000000\nx{a="2"} NaN\n', ["x"])["x"]
    assert found[(("a", "1"),)] == math.inf
    assert math.isnan(found[(("a", "2"),)])


def test_delta_keeps_increases_only_and_refuses_a_reset() -> None:
    a, b = (("k", "a"),), (("k", "b"),)
    assert promtext.delta({a: 1, b: 5}, {a: 4, b: 5, (("k", "c"),): 2}) == {a: 3, (("k", "c"),): 2}
    with pytest.raises(ValueError, match="went down"):
        promtext.delta({a: 5}, {a: 1})


# --- attribution --------------------------------------------------------------------------------
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize("resource", [*RESOURCES, OTHER, NON_RESOURCE])
@pytest.mark.parametrize("verb", [*VERBS, OTHER])
def test_schema_names_are_valid_and_parse_back(verb: str, resource: str) -> None:
    name = schema_name(verb, resource)
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 253
    assert parse_schema(name) == (verb, resource)


def test_other_peoples_schemas_are_not_ours() -> None:
    assert parse_schema("exempt") is None
    assert parse_schema("service-accounts") is None


def test_flow_schemas_cover_every_verb_and_resource_once() -> None:
    schemas = flow_schemas("ns", "sa")
    names = [s["metadata"]["name"] for s in schemas]
    assert len(names) == len(set(names)) == len(VERBS) * (len(RESOURCES) + 1) + 2
    for schema in schemas:
        spec = schema["spec"]
        assert spec["priorityLevelConfiguration"] == {"name": "exempt"}  # never throttled
        assert spec["matchingPrecedence"] < 9000  # before the built-in service-accounts schema
        (rule,) = spec["rules"]
        assert rule["subjects"] == [
            {"kind": "ServiceAccount", "serviceAccount": {"name": "sa", "namespace": "ns"}}
        ]
    by_name = {s["metadata"]["name"]: s["spec"] for s in schemas}
    specific = by_name[schema_name("patch", "jupyternotebookinstances/status")]
    catch_verb = by_name[schema_name("patch", OTHER)]
    assert specific["rules"][0]["resourceRules"][0]["resources"] == [
        "jupyternotebookinstances/status"
    ]
    assert specific["matchingPrecedence"] < catch_verb["matchingPrecedence"]


def _snapshot(dispatched: dict[str, int], dry_runs: int = 0) -> Snapshot:
    lines = [
        f'apiserver_flowcontrol_dispatched_requests_total{{flow_schema="{name}",'
        f'priority_level="exempt"}} {n}'
        for name, n in dispatched.items()
    ]
    lines.append(f'apiserver_request_total{{dry_run="All",verb="APPLY"}} {dry_runs}')
    lines.append('apiserver_request_total{dry_run="",verb="APPLY"} 1000')
    return Snapshot.parse("\n".join(lines))


def test_subject_requests_are_the_deltas_of_our_schemas_only() -> None:
    patch_pods, list_pods = schema_name("patch", "pods"), schema_name("list", "pods")
    before = _snapshot({patch_pods: 10, list_pods: 1, "exempt": 500}, dry_runs=4)
    after = _snapshot({patch_pods: 30, list_pods: 2, "exempt": 900}, dry_runs=14)
    got = subject_requests(before, after)
    assert got.by == {("patch", "pods"): 20, ("list", "pods"): 1}
    assert (got.total, got.reads, got.dry_run, got.writes) == (21, 1, 10, 10)


def test_requests_json_round_trip() -> None:
    req = Requests({("patch", "pods"): 3, ("list", "jupyternotebookinstances"): 1}, dry_run=1)
    data = req.to_json()
    assert data["by_verb"] == {"list": {"jupyternotebookinstances": 1}, "patch": {"pods": 3}}
    assert (data["total"], data["writes"], data["reads"]) == (4, 2, 1)
    assert Requests.from_json(data) == req


# --- statistics ---------------------------------------------------------------------------------
def test_percentile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert stats.percentile(values, 50) == 2.5
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 4.0
    assert stats.percentile(values, 95) == pytest.approx(3.85)
    assert stats.percentile([7.0], 99) == 7.0


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        stats.percentile(values, q)


def test_latency_summary() -> None:
    assert stats.latency_summary([]) == {"n": 0}
    summary = stats.latency_summary([float(i) for i in range(1, 101)])
    assert summary["n"] == 100 and summary["p50"] == 50.5 and summary["max"] == 100.0
    assert summary["p99"] == pytest.approx(99.01)


def test_ratio() -> None:
    assert stats.ratio(5, 2) == 2.5
    assert stats.ratio(5, 0) is None
    assert stats.ratio(None, 2) is None
    assert stats.ratio(0, 2) == 0


# --- tables -------------------------------------------------------------------------------------
def test_markdown_table_pads_and_escapes() -> None:
    text = table.markdown_table(["a", "bb"], [["x|y", "1"]])
    assert text.splitlines() == ["| a    | bb |", "| ---- | -- |", "| x\\|y | 1  |"]


def test_markdown_table_needs_full_rows() -> None:
    with pytest.raises(ValueError):
        table.markdown_table(["a", "b"], [["only one"]])


def test_number_formats() -> None:
    assert table.fmt_seconds(0.01234) == "12.3 ms"
    assert table.fmt_seconds(3.456) == "3.46 s"
    assert table.fmt_seconds(123.4) == "123 s"
    assert table.fmt_seconds(None) == table.MISSING
    assert table.fmt_ratio(2.5) == "2.50\u00d7"
    assert table.fmt_ratio(None) == table.MISSING
    assert table.fmt_mib(2048) == "2 MiB"
    req = {"total": 1506, "writes": 1000, "dry_run": 500}
    assert table.fmt_requests(req) == "1,506 (1,000 writes + 500 dry-run)"
    assert table.fmt_requests({"total": 6, "writes": 0, "dry_run": 0}) == "6 (0 writes)"


def test_breakdown_orders_verbs_and_resources_by_volume() -> None:
    by_verb = {
        "list": {"pods": 1, "jupyternotebooktemplates": 1},
        "patch": {"pods": 200, "persistentvolumeclaims": 200, "jupyternotebookinstances/status": 9},
    }
    assert table.fmt_breakdown(by_verb) == (
        "patch 409 (pvcs 200, pods 200, jni/status 9); list 2 (jnt 1, pods 1)"
    )
    assert table.fmt_breakdown({}) == "none"


def _step(wall: float, total: int, writes: int) -> dict:
    return {"wall_s": wall, "requests": {"total": total, "writes": writes, "dry_run": 0}}


def test_summary_table_has_a_column_per_size_and_ratios() -> None:
    sizes = {
        "1000": {"ours": {"converge": _step(20, 3000, 3000)}},
        "100": {
            "ours": {"converge": _step(4, 300, 300)},
            "kubectl": {"apply": _step(2, 200, 200)},
        },
    }
    lines = report.summary_table(sizes).splitlines()
    assert "N = 100" in lines[0] and lines[0].index("N = 100") < lines[0].index("N = 1,000")
    ratio_row = next(line for line in lines if line.startswith("| wall ours ÷ kubectl"))
    cells = [c.strip() for c in ratio_row.strip("|").split("|")]
    assert cells[1:] == ["2.00\u00d7", table.MISSING]  # N=1000 has no kubectl figure


def test_render_includes_the_machine() -> None:
    text = report.render({"machine": {"cpu_model": "Some CPU", "cpu_cores": 2}, "sizes": {}})
    assert "Some CPU" in text


# --- small parsers ------------------------------------------------------------------------------
def test_proc_status_fields() -> None:
    text = "Name:\tpython\nVmHWM:\t  81234 kB\nVmRSS:\t  80000 kB\nThreads:\t3\n"
    assert parse_proc_status(text) == {"VmHWM": 81234, "VmRSS": 80000}


def test_proc_stat_cpu_survives_odd_command_names() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    text = "42 (py (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0\n"
    assert parse_proc_stat_cpu(text, 100) == 3.0


def test_machine_parsers() -> None:
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert mem_total_kib("MemTotal:       24612345 kB\nMemFree: 1 kB\n") == 24612345


def test_parse_sizes() -> None:
    assert parse_sizes("100,1000") == [100, 1000]
    for bad in ("100,x", "1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_sizes(bad)


# --- workload -----------------------------------------------------------------------------------
def test_baseline_objects_are_what_the_reconciler_would_send() -> None:
    groups = workload.rendered("bench-x", range(3))
    assert len(groups) == 3
    for index, (pvc, pod) in enumerate(groups):
        assert (pvc["kind"], pod["kind"]) == ("PersistentVolumeClaim", "Pod")
        name = workload.instance_name(index)
        assert pod["metadata"]["namespace"] == pvc["metadata"]["namespace"] == "bench-x"
        assert pod["metadata"]["name"] == f"{name}-notebook"
        volume = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert volume == pvc["metadata"]["name"]
        assert "ownerReferences" not in pod["metadata"]  # no instance there to own it
        assert any("applied-hash" in k for k in pod["metadata"]["annotations"])


def test_template_change_touches_only_the_image() -> None:
    before, after = workload.rendered("ns", [0])[0][1], workload.rendered("ns", [0], "img:2")[0][1]
    assert after["spec"]["containers"][0]["image"] == "img:2"
    after["spec"]["containers"][0]["image"] = before["spec"]["containers"][0]["image"]
    assert after["spec"] == before["spec"]


def test_parked_servers_never_reach_a_scheduler_or_a_volume() -> None:
    pvc, pod = workload.rendered("ns", [0])[0]
    assert pod["spec"]["schedulerName"] == workload.PARKED_SCHEDULER
    assert pvc["spec"]["volumeName"] == workload.PARKED_VOLUME
    seed = workload.template("ns", parked=False)
    assert seed["metadata"]["name"] == workload.TEMPLATE_NAME
    assert "schedulerName" not in seed["spec"]["pods"][0]["spec"]
    assert "volumeName" not in seed["spec"]["pvcs"][0]["spec"]
    assert workload.instance("ns", 1, workload.TEMPLATE_NAME)["spec"]["template"]["name"] == (
        workload.TEMPLATE_NAME
    )
    assert [[o["kind"] for o in g] for g in workload.pods_only([[pvc, pod]])] == [["Pod"]]


# --- audit log ----------------------------------------------------------------------------------
def _audit(verb: str, code: int, user: str = SUBJECT_USER, resource: str = "pods") -> str:
    return json.dumps(
        {
            "stage": "ResponseComplete",
            "verb": verb,
            "user": {"username": user},
            "objectRef": {"resource": resource},
            "responseStatus": {"code": code},
        }
    )


def test_audit_counts_the_subjects_answers_after_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(_audit("delete", 200) + "\n")
    log = AuditLog(path)
    mark = log.mark()
    lines = [
        _audit("delete", 200),
        _audit("delete", 404),
        _audit("delete", 409),
        _audit("delete", 200, user="admin"),  # not the subject
        _audit("get", 404),  # not a delete
        _audit("delete", 200, resource="persistentvolumeclaims"),
        '{"stage": "ResponseComplete", "verb": "del',  # still being written
    ]
    with open(path, "a") as out:
        out.write("\n".join(lines))
    answers = log.answers(mark)
    assert answers == {"persistentvolumeclaims": {"200": 1}, "pods": {"200": 1, "404": 1, "409": 1}}
    assert wasted(answers) == 2


def test_audit_follows_the_apiservers_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(_audit("delete", 404) + "\n")  # before the window
    log = AuditLog(path)
    mark = log.mark()
    with open(path, "a") as out:
        out.write(_audit("delete", 200) + "\n")
    path.rename(tmp_path / "audit-2026-11-30T12-54-01.123.log")  # what lumberjack does
    path.write_text(_audit("delete", 409) + "\n" + _audit("delete", 200) + "\n")
    assert log.answers(mark) == {"pods": {"200": 2, "409": 1}}
    (tmp_path / "audit-2026-11-30T12-54-01.123.log").unlink()
    assert log.answers(mark) is None  # the window's start is gone: unknown, not zero


def test_audit_without_a_log_says_unknown() -> None:
    log = AuditLog(None)
    assert log.mark() is None and log.answers(None) is None and wasted(None) is None


# --- targets ------------------------------------------------------------------------------------
def _idle(by_verb: dict, writes: int = 0) -> dict:
    return {"ours": {"idle": {"requests": {"writes": writes, "by_verb": by_verb}}}}


def test_idle_target_wants_pages_not_objects() -> None:
    lists = {"jupyternotebookinstances": 10, "pods": 10, "persistentvolumeclaims": 10}
    assert targets.idle_pass(_idle({"list": lists, "get": {"other": 2}}), 5000).ok is True
    per_object = {"list": lists, "get": {"pods": 5000}}
    assert targets.idle_pass(_idle(per_object), 5000).ok is False
    assert targets.idle_pass(_idle({"list": lists}, writes=1), 5000).ok is False
    unpaged = {"list": {**lists, "pods": 5000}}
    assert targets.idle_pass(_idle(unpaged), 5000).ok is False


def test_converge_target_counts_writes_per_server_and_refuses_reads_per_object() -> None:
    def judged(total: int, writes: int, gets: dict) -> bool | None:
        step = {"requests": {"total": total, "writes": writes, "by_verb": {"get": gets}}}
        return targets.converge_requests({"ours": {"converge": step}}, 1000).ok

    assert judged(3009, 3000, {"other": 2}) is True  # 3 writes each, 9 reads for the pass
    assert judged(3009, 3001, {}) is False  # one write too many
    assert judged(4000, 3000, {"pods": 1000}) is False  # a read per server is a cost per server


def test_targets_table_judges_at_the_largest_size_run_and_says_so() -> None:
    sizes = {
        "100": {
            "ours": {
                "converge": _step(4, 250, 200) | {"cpu_s": 3.0},
                "shards": {"skipped": "no --shard here"},
            },
            "kubectl": {"apply": _step(2, 200, 200) | {"cpu_s": 1.0}},
        }
    }
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
        for line in targets.targets_table(sizes).splitlines()[2:]
    }
    assert rows["converge from empty: requests per server"][2:] == [
        "2.00 writes per server (2.500 with the pass's 50 reads: lists, and 0 GETs of objects)",
        "<= 3",
        "PASS (at N = 100, not 1,000)",
    ]
    assert rows["converge: CPU ours / kubectl"][4].startswith("FAIL")  # 3.0x > 1.5x
    assert rows["2 shards: each one's RSS and CPU / single's"][2] == "no --shard here"
    assert rows["reconciler RSS, continuous"][4] == table.MISSING  # not measured


def test_shards_are_judged_above_a_process_fixed_cost() -> None:
    single = {"rss_kib": 260 * 1024, "cpu_s": 21.0}
    each = [{"shard": f"{i}/2", "rss_kib": 160 * 1024, "cpu_s": 11.0} for i in range(2)]
    result = {
        "ours": {"continuous": {"startup": single}, "shards": {"count": 2, "each": each}},
        "fixed_cost": {"max_rss_kib": 60 * 1024, "cpu_s": 1.0},
    }
    verdict = targets.shards(result, 5000)
    assert verdict.ok is True  # (160-60)/(260-60) = 0.5 of memory, (11-1)/(21-1) = 0.5 of CPU
    assert "0.50x above fixed" in verdict.measured.replace("\u00d7", "x")
    each[1]["rss_kib"] = 200 * 1024  # 0.7 of what the single one holds above the fixed cost
    assert targets.shards(result, 5000).ok is False


def test_orphan_gc_is_timed_from_readiness_and_wants_no_wasted_delete() -> None:
    def judged(after_ready: float, wasted_deletes: int | None) -> bool | None:
        result = {
            "ours": {
                "orphan_gc": {
                    "deleted_s": after_ready + 5.0,  # start-up is its own target
                    "deleted_after_ready_s": after_ready,
                    "pods_gone_s": after_ready + 9.0,  # the node's own pace: not ours to judge
                    "wasted_deletes": wasted_deletes,
                }
            },
            "create_loop": {"delete": {"wall_s": 10.0}},
        }
        return targets.orphan_gc(result, 5000).ok

    assert judged(11.0, 0) is True
    assert judged(13.0, 0) is False  # 1.3x the delete loop
    assert judged(11.0, 3) is False  # a delete of something already gone
    assert judged(11.0, None) is None  # no audit log: not judged as a pass


def test_snapshot_reads_the_apiservers_cpu() -> None:
    text = "process_cpu_seconds_total 12.5\nprocess_cpu_seconds_total_x 1\n"
    before, after = Snapshot.parse(text), Snapshot.parse(text.replace("12.5", "14.75"))
    assert (before.cpu_s, apiserver_cpu(before, after)) == (12.5, 2.25)
    assert apiserver_cpu(Snapshot.parse(""), after) is None  # a cluster that does not say
