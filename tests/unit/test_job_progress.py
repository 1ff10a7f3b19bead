"""A running job's progress: the publisher's rate limit (on a fake clock), and what of a data
preparator's report may leave the site (its aggregate) and what stays (case ids, its lines)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

from services.executor import prep_report
from services.executor.progress import PROGRESS_SECONDS, Meter, Progress, Throttle, watching
from shared.events import REPORT_STATUS_KEYS, JobProgress, ReportSummary


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_sends_each_stage_change_and_one_per_interval() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock)
    sent = []
    for step in range(100):  # a sample every 0.1 s for 10 s of one stage
        sample = Progress("hash", done=step, total=1000)
        if throttle.allows(sample):
            sent.append(step)
        clock.now += 0.1
    assert sent == [0, 50]  # the first of the stage, then one per PROGRESS_SECONDS
    assert PROGRESS_SECONDS == 5.0
    assert throttle.allows(Progress("prepare"))  # a stage change goes at once
    assert not throttle.allows(Progress("prepare", message="again"))
    clock.now += PROGRESS_SECONDS
    assert throttle.allows(Progress("prepare", message="later"))


def test_throttle_sends_the_end_of_a_counted_stage_once() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock)
    assert throttle.allows(Progress("verify", done=0, total=10))
    assert throttle.allows(Progress("verify", done=10, total=10))  # the end, although within the interval
    assert not throttle.allows(Progress("verify", done=10, total=10))  # but only once
    assert throttle.allows(Progress("hash", done=5, total=5))  # a stage that starts finished: one event


def test_a_chatty_stage_publishes_a_bounded_number_of_events() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock)
    stages = ("hash", "prepare", "sanity_check", "statistics")
    sent = 0
    for stage in stages:
        for step in range(10_000):  # 10,000 samples 1 ms apart: 10 s per stage
            sent += throttle.allows(Progress(stage, message=f"step {step}"))
            clock.now += 0.001
    assert sent <= len(stages) * (1 + 10 / PROGRESS_SECONDS)


def medperf_report(cases: int, done: int) -> dict:
    """As MedPerf's DataPrepManualSteps preparator writes it: pandas' to_dict(), column first."""
    ids = [f"subject-{n:04d}-XQ" for n in range(cases)]
    return {
        "status": {case: (3 if n < done else 0) for n, case in enumerate(ids)},
        "status_name": {case: ("DONE" if n < done else "unprocessed") for n, case in enumerate(ids)},
        "comment": {case: f"{case} looked at by Dr. Who" for case in ids},
    }


def test_the_summary_counts_cases_per_status_and_names_no_case(tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.yaml").write_text(yaml.safe_dump(medperf_report(5, 2)))
    progress = prep_report.read(out)
    assert progress is not None and progress.report is not None
    assert progress.report.cases == 5
    assert progress.report.statuses == {"3": 2, "0": 3}
    event = JobProgress(actor="a", site="s", job_id=1, benchmark_id=1, stage="prepare", report=progress.report)
    assert "subject-" not in event.model_dump_json()
    assert any("subject-0004-XQ" in line for line in progress.lines)  # the site's own terminal sees them


def test_text_statuses_count_as_labels_unless_they_could_name_a_case() -> None:
    report = {
        "case-a": {"status": "DONE"},
        "case-b": {"status": "case-a"},  # a status that is a case's id
        "case-c": {"status": "failed: the scan of Jane Doe is blurred"},  # free text
        "case-d": {"status": 2.5},
        "case-e": {"status": None},
    }
    summary = prep_report.summarise(report)
    assert summary is not None
    assert summary.cases == 5
    assert summary.statuses == {"DONE": 1, "other": 2, "2.5": 1}


def test_many_status_values_fold_into_other() -> None:
    summary = prep_report.summarise({"status": {f"c{n}": n for n in range(40)}})
    assert summary is not None
    assert len(summary.statuses) == REPORT_STATUS_KEYS
    assert sum(summary.statuses.values()) == 40


def test_a_half_written_report_has_no_summary_but_its_lines(tmp_path: Path) -> None:
    text = yaml.safe_dump(medperf_report(4, 1))
    path = tmp_path / "report.yaml"
    path.write_text(text[: len(text) // 2] + "\n  - [unclosed: {")
    progress = prep_report.read(path)
    assert progress is not None and progress.report is None and progress.lines
    path.write_text(json.dumps({"status": {"x1": 1}}))
    progress = prep_report.read(path)
    assert progress is not None and progress.report is not None and progress.report.cases == 1


def test_a_report_past_the_cap_is_read_only_at_its_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(prep_report, "REPORT_READ_BYTES", 1000)
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump(medperf_report(200, 10)))
    progress = prep_report.read(path)
    assert progress is not None and progress.report is None
    assert "too large" in progress.message
    assert len(progress.lines) == prep_report.REPORT_LINES
    assert all(len(line) <= prep_report.LINE_CHARS for line in progress.lines)


def test_an_empty_or_absent_report_is_no_progress(tmp_path: Path) -> None:
    assert prep_report.read(tmp_path / "missing") is None
    (tmp_path / "empty").touch()
    assert prep_report.read(tmp_path / "empty") is None


async def test_watching_tells_changes_and_the_last_sample() -> None:
    told: list[Progress] = []
    first = asyncio.Event()

    async def sink(progress: Progress) -> None:
        told.append(progress)
        first.set()

    meter = Meter()
    async with watching(sink, lambda: meter.sample("hash"), every=0.01):
        meter(5, 10)
        await first.wait()  # the ticker samples while the body waits
        meter(10, 10)
    assert told[0] == Progress("hash", 5, 10)
    assert told[-1] == Progress("hash", 10, 10)
    assert len(told) == len(set(told))  # an unchanged sample is not told again


def test_the_console_describes_a_progress_event() -> None:
    from cli.console_render import describe

    event = JobProgress(
        actor="a",
        site="site-a",
        job_id=3,
        kind="prepare",
        benchmark_id=1,
        stage="prepare",
        report=prep_report.summarise(medperf_report(4, 1)),
    )
    text = describe(event.model_dump(mode="json"))
    assert "-- prepare; report: 4 cases (0: 3, 3: 1)" in text  # the most common status first
    hashing = JobProgress(actor="a", site="site-a", job_id=3, benchmark_id=1, stage="hash", done=5, total=9)
    assert "-- hash: 5 of 9" in describe(hashing.model_dump(mode="json"))


def test_the_report_is_read_again_only_when_it_changed_and_not_too_often(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump(medperf_report(3, 1)))
    reads: list[Path] = []
    real_read = prep_report.read

    def counted(output: Path, stage: str = "prepare") -> Progress | None:
        reads.append(output)
        clock.now += 0.5  # a slow parse: half a second
        return real_read(output, stage)

    monkeypatch.setattr(prep_report, "read", counted)
    clock = FakeClock()
    reader = prep_report.ReportReader(path, clock=clock)
    first = reader()
    assert first is not None and first.report is not None and first.report.statuses == {"3": 1, "0": 2}
    assert reader() == first and len(reads) == 1  # unchanged: not read again
    path.write_text(yaml.safe_dump(medperf_report(3, 2)))
    assert reader() == first and len(reads) == 1  # changed, but within ten times the last read's cost
    clock.now += 5
    assert reader().report.statuses == {"3": 2, "0": 1} and len(reads) == 2
    clock.now += 5
    path.write_text("status: {a: [unclosed")  # rewritten, half-way
    half = reader()
    assert half.report == ReportSummary(cases=3, statuses={"3": 2, "0": 1})  # the last whole count stands
    assert half.lines == ("status: {a: [unclosed",)


async def test_a_submission_records_its_progress_and_starts_over_without_it(tmp_path: Path) -> None:
    from services.executor import datasets
    from services.executor.live import submission_sink
    from services.executor.settings import LocalDataset
    from services.executor.store import TABLES, Base, DatasetSubmission
    from shared.db import Database, UnitOfWork

    db = Database(f"sqlite:///{tmp_path / 'agent.db'}")
    await db.create_all(Base.metadata)

    def uow() -> UnitOfWork:
        return UnitOfWork(db, TABLES)

    try:
        local = LocalDataset(name="ward", benchmark="bench", data_path=tmp_path, labels_path=tmp_path)
        sub = await datasets.submit(uow(), local, consent=False)
        record = submission_sink(uow, sub.id)
        await record(Progress("hash", done=5, total=10))
        await record(Progress("hash", message="no count: the last one stands"))
        row = await datasets.progress(uow(), sub.id)
        assert row is not None and (row.stage, row.done, row.total) == ("hash", 5, 10)
        await record(Progress("prepare", lines=("case-1: 3",)))
        row = await datasets.progress(uow(), sub.id)
        assert row is not None and (row.stage, row.done, row.total, row.lines) == ("prepare", None, None, ["case-1: 3"])

        async with uow() as unit:  # it failed; the data owner submits it again
            failed = await unit.session.get(DatasetSubmission, sub.id)
            assert failed is not None
            failed.status = "failed"
            await unit.commit()
        again = await datasets.submit(uow(), local, consent=False)
        assert again.id == sub.id and await datasets.progress(uow(), sub.id) is None
    finally:
        await db.dispose()
