"""The demo's container scripts, run as host subprocesses on the real 569-case dataset."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score

from examples.breast_cancer.assets import MODELS, SITES, DemoAssets, build_demo_assets, fit_models, split_indices
from examples.breast_cancer.images import DemoImage
from examples.breast_cancer.specs import MOUNT_PATHS, container_specs
from shared.containers import ContainerSpec

CONTAINERS = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer" / "containers"
PREP = CONTAINERS / "prep" / "prep.py"
INFER = CONTAINERS / "model" / "infer.py"
EVALUATE = CONTAINERS / "metrics" / "evaluate.py"


def run(script: Path, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise AssertionError(f"{script.name} {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"demo_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extract(tarball: Path, into: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
    return into


def read_table(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def write_table(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return build_demo_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def pipeline(assets: DemoAssets, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Per site: prepared dirs, statistics and, per model, evaluate's results and per-case rows."""
    work = tmp_path_factory.mktemp("pipeline")
    params = work / "metrics-parameters.json"
    params.write_text(json.dumps({"threshold": 0.5}))
    weights = {m: extract(assets.weights(m).path, work / "weights" / m) for m in MODELS}
    out: dict[str, dict] = {}
    for site_name, site in assets.sites.items():
        base = work / site_name
        data, labels = base / "prepared", base / "prepared_labels"
        report = run(
            PREP, "prepare", f"--data_path={site.data_path}", f"--labels_path={site.labels_path}",
            f"--output_path={data}", f"--output_labels_path={labels}",
        )  # fmt: skip
        run(PREP, "sanity_check", f"--data_path={data}", f"--labels_path={labels}")
        run(PREP, "statistics", f"--data_path={data}", f"--labels_path={labels}", f"--output_path={base / 'stats'}")
        site_out: dict[str, object] = {
            "prepared": data,
            "labels": labels,
            "prepare_report": json.loads(report.stdout),
            "statistics": json.loads((base / "stats" / "statistics.json").read_text()),
        }
        for model in MODELS:
            predictions = base / model / "predictions"
            run(INFER, f"--data_path={data}", f"--additional_files={weights[model]}", f"--output_path={predictions}")
            results, local = base / model / "results", base / model / "local"
            run(
                EVALUATE, f"--predictions={predictions}", f"--labels={labels}", f"--output_path={results}",
                f"--local_outputs_path={local}", f"--parameters_file={params}",
            )  # fmt: skip
            site_out[model] = {
                "predictions": predictions,
                "results": json.loads((results / "results.json").read_text()),
                "per_case": read_rows(local / "per_case.csv"),
            }
        out[site_name] = site_out
    return out


def test_canonical_feature_order_is_sklearns() -> None:
    prep = load_script(PREP)
    assert list(prep.FEATURES) == [str(name) for name in load_breast_cancer().feature_names]


def test_splits_are_disjoint_and_cover_every_case(assets: DemoAssets) -> None:
    splits = split_indices(569)
    every = np.concatenate(list(splits.values()))
    assert sorted(every.tolist()) == list(range(569))
    assert assets.n_train + assets.n_demo + sum(s.n_cases for s in assets.sites.values()) == 569
    assert (assets.n_train, assets.n_demo) == (120, 20)
    assert all(s.n_cases == 143 for s in assets.sites.values())
    malignant = load_breast_cancer().target == 0
    for name, site in assets.sites.items():
        assert site.n_malignant == int(malignant[splits[name]].sum())


def test_hosted_tarballs_have_relative_members_and_expected_content(assets: DemoAssets, tmp_path: Path) -> None:
    for hosted in assets.hosted.values():
        assert hashlib.sha256(hosted.path.read_bytes()).hexdigest() == hosted.sha256
        with tarfile.open(hosted.path) as tar:
            assert all(not m.name.startswith("/") and ".." not in m.name.split("/") for m in tar.getmembers())
    demo = extract(assets.demo_dataset.path, tmp_path / "demo")
    assert json.loads((demo / "paths.json").read_text()) == {"data_path": "data", "labels_path": "labels"}
    labels = read_rows(demo / "labels" / "labels.csv")
    assert len(labels) == 20 and {row["diagnosis"] for row in labels} <= {"M", "B"}
    assert [r["case_id"] for r in read_rows(demo / "data" / "features.csv")] == [r["case_id"] for r in labels]
    for model in MODELS:
        model_json = json.loads((extract(assets.weights(model).path, tmp_path / model) / "model.json").read_text())
        assert model_json["kind"] == model and model_json["features"] == list(assets.feature_names)


def test_build_is_byte_for_byte_deterministic(assets: DemoAssets, tmp_path: Path) -> None:
    again = build_demo_assets(tmp_path / "again")
    assert {k: v.sha256 for k, v in again.hosted.items()} == {k: v.sha256 for k, v in assets.hosted.items()}
    for site in SITES:
        for attr, name in (("data_path", "features.csv"), ("labels_path", "labels.csv")):
            first = getattr(assets.sites[site], attr) / name
            assert first.read_bytes() == (getattr(again.sites[site], attr) / name).read_bytes()


def test_prepare_maps_diagnoses_and_statistics_are_aggregate(assets: DemoAssets, pipeline: dict) -> None:
    for site_name, site in assets.sites.items():
        result = pipeline[site_name]
        assert result["prepare_report"]["n_prepared"] == site.n_cases
        assert result["statistics"] == {
            "n_cases": site.n_cases,
            "n_malignant": site.n_malignant,
            "n_benign": site.n_cases - site.n_malignant,
        }
        raw = {r["case_id"]: r["diagnosis"] for r in read_rows(site.labels_path / "labels.csv")}
        prepared = {r["case_id"]: r["label"] for r in read_rows(result["labels"] / "labels.csv")}
        assert prepared == {cid: "1" if d == "M" else "0" for cid, d in raw.items()}


def test_models_discriminate_on_every_site(pipeline: dict) -> None:
    for site_name in SITES:
        results = {model: pipeline[site_name][model]["results"] for model in MODELS}
        assert results["logistic_regression"]["auc"] > 0.95, (site_name, results)
        assert all(r["auc"] > 0.85 and r["n_cases"] == 143 for r in results.values()), (site_name, results)
        assert set(results["gaussian_nb"]) == {"auc", "accuracy", "sensitivity", "specificity", "n_cases"}


def test_metrics_agree_with_sklearn(pipeline: dict) -> None:
    for site_name in SITES:
        for model in MODELS:
            rows = pipeline[site_name][model]["per_case"]
            y = [int(r["label"]) for r in rows]
            scores = [float(r["score"]) for r in rows]
            results = pipeline[site_name][model]["results"]
            assert results["auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
            predicted = [int(s >= 0.5) for s in scores]
            assert results["accuracy"] == pytest.approx(np.mean(np.array(y) == np.array(predicted)))


def test_exported_weights_reproduce_sklearn_scores(assets: DemoAssets, pipeline: dict) -> None:
    dataset = load_breast_cancer()
    train = split_indices(569)["train"]
    fitted = fit_models(dataset.data[train], (dataset.target[train] == 0).astype(int))
    for site_name in SITES:
        cases = read_rows(pipeline[site_name]["prepared"] / "cases.csv")
        x = np.array([[float(row[name]) for name in assets.feature_names] for row in cases])
        for model in MODELS:
            predictions = read_rows(pipeline[site_name][model]["predictions"] / "predictions.csv")
            scores = [float(r["score"]) for r in predictions]
            assert np.allclose(scores, fitted.p_malignant(model, x), atol=1e-9), (site_name, model)


def test_rank_auc_counts_ties_as_half() -> None:
    evaluate = load_script(EVALUATE)
    assert evaluate.rank_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.8]) == pytest.approx(0.875)
    assert evaluate.rank_auc([1, 1], [0.3, 0.9]) is None


def test_prepare_drops_and_counts_unusable_rows(assets: DemoAssets, tmp_path: Path) -> None:
    site = assets.sites["hospital-b"]
    header, *rows = read_table(site.data_path / "features.csv")
    rows[0][3], rows[1][5], rows[2][7] = "", "n/a", "nan"
    data, labels = tmp_path / "raw_data", tmp_path / "raw_labels"
    # Columns reversed: prepare must put them back into the canonical order.
    order = [0, *reversed(range(1, len(header)))]
    write_table(data / "features.csv", [[row[i] for i in order] for row in [header, *rows]])
    label_rows = read_table(site.labels_path / "labels.csv")
    label_rows[4][1] = "X"  # rows[3]'s diagnosis
    del label_rows[5]  # rows[4] loses its label
    write_table(labels / "labels.csv", label_rows)

    out, out_labels = tmp_path / "prepared", tmp_path / "prepared_labels"
    proc = run(PREP, "prepare", f"--data_path={data}", f"--labels_path={labels}", f"--output_path={out}",
               f"--output_labels_path={out_labels}")  # fmt: skip
    report = json.loads(proc.stdout)
    assert report["n_dropped_invalid_values"] == 3
    assert (report["n_dropped_invalid_label"], report["n_dropped_missing_label"]) == (1, 1)
    assert report["n_prepared"] == site.n_cases - 5
    prepared = read_rows(out / "cases.csv")
    assert list(prepared[0]) == ["case_id", *assets.feature_names]
    assert prepared[0]["case_id"] == rows[5][0] and float(prepared[0]["mean radius"]) == float(rows[5][1])
    run(PREP, "sanity_check", f"--data_path={out}", f"--labels_path={out_labels}")


def test_prepare_rejects_a_missing_column(assets: DemoAssets, tmp_path: Path) -> None:
    site = assets.sites["hospital-a"]
    table = read_table(site.data_path / "features.csv")
    drop = table[0].index("worst symmetry")
    write_table(tmp_path / "data" / "features.csv", [row[:drop] + row[drop + 1 :] for row in table])
    proc = run(PREP, "prepare", f"--data_path={tmp_path / 'data'}", f"--labels_path={site.labels_path}",
               f"--output_path={tmp_path / 'o'}", f"--output_labels_path={tmp_path / 'l'}", check=False)  # fmt: skip
    assert proc.returncode == 1 and "worst symmetry" in proc.stderr


@pytest.mark.parametrize("corruption", ["non_finite", "bad_label", "extra_case"])
def test_sanity_check_rejects_corrupted_prepared_data(pipeline: dict, tmp_path: Path, corruption: str) -> None:
    data = shutil.copytree(pipeline["hospital-c"]["prepared"], tmp_path / "data")
    labels = shutil.copytree(pipeline["hospital-c"]["labels"], tmp_path / "labels")
    target = labels / "labels.csv" if corruption == "bad_label" else data / "cases.csv"
    lines = target.read_text().splitlines()
    if corruption == "non_finite":
        lines[3] = ",".join([*lines[3].split(",")[:-1], "inf"])
    elif corruption == "bad_label":
        lines[3] = lines[3].rsplit(",", 1)[0] + ",2"
    else:
        lines.append("intruder," + ",".join(lines[1].split(",")[1:]))
    target.write_text("\n".join(lines) + "\n")
    proc = run(PREP, "sanity_check", f"--data_path={data}", f"--labels_path={labels}", check=False)
    expected = {"non_finite": "not a finite number", "bad_label": "label must be 0 or 1", "extra_case": "differ"}
    assert proc.returncode == 1 and "sanity check failed" in proc.stderr and expected[corruption] in proc.stderr


def test_evaluate_rejects_predictions_for_other_cases(pipeline: dict, tmp_path: Path) -> None:
    predictions = pipeline["hospital-a"]["gaussian_nb"]["predictions"]
    lines = (predictions / "predictions.csv").read_text().splitlines()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "predictions.csv").write_text("\n".join(lines[:-1]) + "\n")
    proc = run(EVALUATE, f"--predictions={tmp_path / 'p'}", f"--labels={pipeline['hospital-b']['labels']}",
               f"--output_path={tmp_path / 'o'}", f"--local_outputs_path={tmp_path / 'l'}", check=False)  # fmt: skip
    assert proc.returncode == 1 and "cover different cases" in proc.stderr
    assert "hospital-" not in proc.stderr  # counts only, no case ids
    assert not (tmp_path / "o" / "results.json").exists()


def test_container_specs_validate_and_pass_every_mount(assets: DemoAssets) -> None:
    fake = {k: DemoImage(f"localhost/x-{k}:1", "sha256:" + "ab" * 32) for k in ("prep", "model", "metrics")}
    specs = container_specs(fake, "http://files.example/demo/", assets)
    assert set(specs) == {"prep", "metrics", *MODELS}
    for name, raw in specs.items():
        spec = ContainerSpec.model_validate(raw)
        for task in spec.tasks.values():
            for key, mount in {**task.inputs, **task.outputs}.items():
                assert mount.mount_path == MOUNT_PATHS[key] and f"--{key}={mount.mount_path}" in task.command
        if name in MODELS:
            assert spec.additional_files is not None
            assert spec.additional_files.source == f"http://files.example/demo/weights-{name}.tar.gz"
            assert spec.additional_files.sha256 == assets.weights(name).sha256
    assert ContainerSpec.model_validate(specs["prep"]).missing_tasks("data_preparator") == []
