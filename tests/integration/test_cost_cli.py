"""``vops cost`` end to end on the CLI: sync from a bucket, then the report as a table, JSON,
CSV and plots, priced from SkyPilot's catalog (offline)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from vicuna_ops.cli.app import main
from vicuna_ops.ledger import Ledger
from vicuna_ops.segments import SegmentRecord, write_segment
from vicuna_ops.storage import open_store

T0 = 1_700_000_000.0
HOUR = 3600.0
P4D_SPOT_US_EAST_1D = 2.4655  # v8/aws/vms.csv, p4d.24xlarge, use1-az1 (= us-east-1d)
P4D_SPOT_US_EAST_1A = 8.1915  # use1-az2 (= us-east-1a)


def vops(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture
def ledger_with_runs(tmp_path, sky_offline, monkeypatch):
    from sky.catalog import aws_catalog

    monkeypatch.setattr(aws_catalog, "_user_df", None)  # re-read with the patched mapping
    bucket = f"file://{tmp_path}/bucket"
    common = dict(cloud="aws", region="us-east-1", instance_type="p4d.24xlarge",
                  accelerators="A100:8", use_spot=True)
    train = open_store(bucket).child("train-1")
    write_segment(train, SegmentRecord(
        run_id="train-1", segment_id="t1", attempt=1, zone="us-east-1d", start=T0,
        heartbeat=T0 + 2 * HOUR, status="preempted", first_step=0, steps=100, tokens=400_000,
        epoch=0.5, **common))
    write_segment(train, SegmentRecord(
        run_id="train-1", segment_id="t2", attempt=2, zone="us-east-1a", start=T0 + 2.5 * HOUR,
        heartbeat=T0 + 4.5 * HOUR, status="budget-stopped", first_step=90, steps=190,
        tokens=400_000, epoch=0.95, **common))
    train.put_bytes("segments/t3.json", b"not json at all")
    other = open_store(bucket).child("other-1")
    write_segment(other, SegmentRecord(
        run_id="other-1", segment_id="o1", zone="us-east-1e", start=T0, heartbeat=T0 + HOUR,
        **common))  # no p4d in us-east-1e: unpriced
    with Ledger() as ledger:
        ledger.add_run("train-1", "train", "running", bucket=bucket)
        ledger.add_run("other-1", "train", "running", bucket=bucket)
    return bucket


def test_sync_twice_changes_nothing(capsys, ledger_with_runs):
    code, out, err = vops(capsys, "cost", "sync", "--no-queue", "--json")
    assert code == 0
    first = {r["run_id"]: r for r in json.loads(out)}
    assert first["train-1"]["segments_changed"] == 2 and first["train-1"]["run_changed"]
    assert "t3.json" in err and "corrupt segment record" in err  # reported, skipped
    with Ledger() as ledger:
        before = [(ledger.get_run(r), ledger.segments(r)) for r in ("train-1", "other-1")]
    code, out, _ = vops(capsys, "cost", "sync", "--no-queue", "--json")
    assert code == 0
    assert all(r["segments_changed"] == 0 and not r["run_changed"] for r in json.loads(out))
    with Ledger() as ledger:
        assert [(ledger.get_run(r), ledger.segments(r)) for r in ("train-1", "other-1")] == before
        assert ledger.get_run("train-1")["status"] == "budget-stopped"


def test_report_json_csv_and_table(capsys, ledger_with_runs):
    assert vops(capsys, "cost", "sync", "--no-queue")[0] == 0
    code, out, _ = vops(capsys, "cost", "train-1", "other-1", "--json")
    assert code == 0
    runs = {r["run_id"]: r for r in json.loads(out)["runs"]}
    train = runs["train-1"]
    expected = 2 * P4D_SPOT_US_EAST_1D + 2 * P4D_SPOT_US_EAST_1A
    assert round(train["cost"], 2) == round(expected, 2)
    assert train["status"] == "budget-stopped" and train["preemptions"] == 1
    assert train["segments"][0]["redone_steps"] == 10  # steps 91..100 ran twice
    assert train["lost_hours"] == pytest.approx(10 * 2 / 100 + 0.5)
    assert train["cost_per_epoch"] == pytest.approx(expected / 0.95, rel=1e-5)
    assert runs["other-1"]["cost"] is None and runs["other-1"]["unpriced_segments"] == 1

    code, out, _ = vops(capsys, "cost", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    totals = {r["run_id"]: r for r in rows if r["row"] == "total"}
    assert round(float(totals["train-1"]["cost"]), 2) == round(expected, 2)
    assert totals["other-1"]["cost"] == ""

    code, out, _ = vops(capsys, "cost")
    assert code == 0
    assert "train-1 (budget-stopped)" in out and "unpriced" in out
    assert f"${expected:,.2f}" in out


def test_since_filters_runs(capsys, ledger_with_runs):
    code, out, _ = vops(capsys, "cost", "--since", "2999-01-01", "--json")
    assert code == 0 and json.loads(out)["runs"] == []
    code, _, err = vops(capsys, "cost", "--since", "soon")
    assert code == 2 and err.count("\n") == 1 and "not a date" in err


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_plot_file_is_written(capsys, ledger_with_runs, tmp_path, suffix):
    pytest.importorskip("matplotlib")
    assert vops(capsys, "cost", "sync", "--no-queue")[0] == 0
    target = tmp_path / f"cost{suffix}"
    code, _, err = vops(capsys, "cost", "--json", "--plot", str(target))
    assert code == 0 and "wrote" in err
    data = target.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    else:
        page = data.decode()
        assert "<svg" in page and "train-1" in page and "budget-stopped" in page
        # self-contained: nothing fetched from elsewhere
        assert "<script" not in page and "<link" not in page
        assert 'src="http' not in page and 'href="http' not in page


def test_plot_to_an_unknown_format_is_a_user_error(capsys, ledger_with_runs, tmp_path):
    code, _, err = vops(capsys, "cost", "--plot", str(tmp_path / "cost.gif"))
    assert code == 2 and "unknown format" in err


@pytest.mark.parametrize("args", [["--plot", "cost.xyz"], ["--plot", "no/such/dir/c.png"],
                                  ["--since", "soon"], ["--json", "--csv"],
                                  ["--sync", "--plot", "cost.xyz"]])
@pytest.mark.parametrize("ledger_exists", [True, False])
def test_a_rejected_report_writes_nothing(capsys, tmp_path, monkeypatch, args, ledger_exists):
    from vicuna_ops.config import vops_home

    monkeypatch.chdir(tmp_path)
    home = vops_home()
    if ledger_exists:
        with Ledger() as ledger:
            ledger.add_run("r1", "train", "running", bucket="file:///tmp/b")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in home.glob("ledger.db*")}
    assert ("ledger.db" in before) == ledger_exists
    code, out, err = vops(capsys, "cost", *args)
    assert code == 2 and err.count("\n") == 1 and out == "", err
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in home.glob("ledger.db*")}
    assert after == before
    assert not list(tmp_path.glob("cost.*"))
