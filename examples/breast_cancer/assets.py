"""Build the demo's data and model weights from scikit-learn's copy of the WDBC dataset.

The 569 real cases are split once, with a fixed seed, into a training set (used only here, to fit
the weights), a small demo dataset (hosted, for benchmark submission) and three hospital sites
exported in the raw form a hospital would produce. Everything hosted is a gzipped tarball built
byte-for-byte reproducibly, because registrations pin files by sha256.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

SEED = 20240601
N_TRAIN = 120
N_DEMO = 20
SITES = ("hospital-a", "hospital-b", "hospital-c")
MODELS = ("logistic_regression", "gaussian_nb", "decision_tree")
DEMO_DATASET = "demo-dataset.tar.gz"
# Fixed tar metadata: the archive's bytes must not depend on who built it, or when.
_TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z

Features = np.ndarray


@dataclass(frozen=True)
class SiteData:
    """One hospital's raw export: what a data owner points `prepare` at."""

    name: str
    data_path: Path  # holds features.csv
    labels_path: Path  # holds labels.csv
    n_cases: int
    n_malignant: int


@dataclass(frozen=True)
class HostedAsset:
    path: Path
    sha256: str


@dataclass(frozen=True)
class DemoAssets:
    root: Path
    sites: dict[str, SiteData]
    hosted: dict[str, HostedAsset]  # by file name; all files live in root / "hosted"
    feature_names: tuple[str, ...]
    n_train: int
    n_demo: int

    def weights(self, model: str) -> HostedAsset:
        return self.hosted[weights_file_name(model)]

    @property
    def demo_dataset(self) -> HostedAsset:
        return self.hosted[DEMO_DATASET]

    @property
    def hosted_dir(self) -> Path:
        return self.root / "hosted"


def weights_file_name(model: str) -> str:
    return f"weights-{model}.tar.gz"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def raw_files(
    case_ids: list[str], x: Features, malignant: np.ndarray, feature_names: tuple[str, ...]
) -> tuple[bytes, bytes]:
    """(features.csv, labels.csv) in the raw hospital format, diagnoses as M/B."""
    rows = [[cid, *(repr(float(v)) for v in row)] for cid, row in zip(case_ids, x, strict=True)]
    features = _csv_bytes(["case_id", *feature_names], rows)
    labels = _csv_bytes(
        ["case_id", "diagnosis"], [[cid, "M" if m else "B"] for cid, m in zip(case_ids, malignant, strict=True)]
    )
    return features, labels


def write_tarball(path: Path, members: dict[str, bytes]) -> None:
    """A gzipped tar of relative members whose bytes depend only on the members."""
    directories = sorted({str(Path(name).parent) for name in members} - {"."})
    with (
        open(path, "wb") as raw,
        # filename="" and mtime=0 keep the build path and time out of the gzip header.
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name in directories:
            info = _tar_info(name, 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name in sorted(members):
            info = _tar_info(name, 0o644)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))


def _tar_info(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = mode, _TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


@dataclass(frozen=True)
class FittedModels:
    """The scikit-learn fits behind the exported weights; label 1 = malignant throughout."""

    scaler: StandardScaler
    logistic: LogisticRegression
    naive_bayes: GaussianNB
    tree: DecisionTreeClassifier

    def p_malignant(self, name: str, x: Features) -> np.ndarray:
        """scikit-learn's own scores, the reference the exported weights must reproduce."""
        if name == "logistic_regression":
            return self.logistic.predict_proba(self.scaler.transform(x))[:, 1]
        estimator = {"gaussian_nb": self.naive_bayes, "decision_tree": self.tree}[name]
        return estimator.predict_proba(x)[:, 1]


def fit_models(x: Features, malignant: np.ndarray) -> FittedModels:
    scaler = StandardScaler().fit(x)
    return FittedModels(
        scaler=scaler,
        logistic=LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(x), malignant),
        naive_bayes=GaussianNB().fit(x, malignant),
        tree=DecisionTreeClassifier(max_depth=3, random_state=SEED).fit(x, malignant),
    )


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.ravel(values)]


def _tree_nodes(tree: DecisionTreeClassifier) -> list[dict[str, object]]:
    # sklearn's arrays flattened into one node list; root is node 0, leaves have child -1.
    arrays = tree.tree_
    nodes: list[dict[str, object]] = []
    for i in range(arrays.node_count):
        if arrays.children_left[i] == -1:
            counts = arrays.value[i][0]
            nodes.append({"p_malignant": float(counts[1] / counts.sum())})
        else:
            nodes.append(
                {
                    "feature": int(arrays.feature[i]),
                    "threshold": float(arrays.threshold[i]),
                    "left": int(arrays.children_left[i]),
                    "right": int(arrays.children_right[i]),
                }
            )
    return nodes


def export_model(name: str, fitted: FittedModels, feature_names: tuple[str, ...]) -> dict[str, object]:
    """The model.json the model container reads; its layouts are documented in infer.py."""
    head: dict[str, object] = {"kind": name, "features": list(feature_names)}
    if name == "logistic_regression":
        return head | {
            "mean": _floats(fitted.scaler.mean_),
            "scale": _floats(fitted.scaler.scale_),
            "coef": _floats(fitted.logistic.coef_[0]),
            "intercept": float(fitted.logistic.intercept_[0]),
        }
    if name == "gaussian_nb":
        # infer.py expects rows ordered (benign, malignant), i.e. classes_ == [0, 1].
        if list(fitted.naive_bayes.classes_) != [0, 1]:
            raise ValueError("naive Bayes was not fitted on 0/1 labels")
        return head | {
            "priors": _floats(fitted.naive_bayes.class_prior_),
            "means": [_floats(row) for row in fitted.naive_bayes.theta_],
            "variances": [_floats(row) for row in fitted.naive_bayes.var_],
        }
    if name == "decision_tree":
        return head | {"nodes": _tree_nodes(fitted.tree)}
    raise ValueError(f"unknown model {name!r}")


def split_indices(n_cases: int) -> dict[str, np.ndarray]:
    """Disjoint case indices per split, the same on every run."""
    order = np.random.RandomState(SEED).permutation(n_cases)
    per_site = (n_cases - N_TRAIN - N_DEMO) // len(SITES)
    splits = {"train": order[:N_TRAIN], "demo": order[N_TRAIN : N_TRAIN + N_DEMO]}
    start = N_TRAIN + N_DEMO
    for k, site in enumerate(SITES):
        # The last site takes any remainder so no case is left out.
        end = start + per_site if k < len(SITES) - 1 else n_cases
        splits[site] = order[start:end]
        start = end
    return splits


def build_demo_assets(out_dir: Path) -> DemoAssets:
    """Write site exports and hosted tarballs under out_dir and describe them."""
    dataset = load_breast_cancer()
    x = np.asarray(dataset.data, dtype=float)
    malignant = (np.asarray(dataset.target) == 0).astype(int)  # sklearn: 0 = malignant
    feature_names = tuple(str(n) for n in dataset.feature_names)
    splits = split_indices(len(x))

    sites: dict[str, SiteData] = {}
    for site in SITES:
        idx = splits[site]
        site_dir = out_dir / "sites" / site
        case_ids = [f"{site}-{k:04d}" for k in range(1, len(idx) + 1)]
        features_csv, labels_csv = raw_files(case_ids, x[idx], malignant[idx], feature_names)
        for sub, name, data in (("data", "features.csv", features_csv), ("labels", "labels.csv", labels_csv)):
            (site_dir / sub).mkdir(parents=True, exist_ok=True)
            (site_dir / sub / name).write_bytes(data)
        sites[site] = SiteData(site, site_dir / "data", site_dir / "labels", len(idx), int(malignant[idx].sum()))

    hosted_dir = out_dir / "hosted"
    hosted_dir.mkdir(parents=True, exist_ok=True)
    fitted = fit_models(x[splits["train"]], malignant[splits["train"]])
    for name in MODELS:
        model_json = json.dumps(export_model(name, fitted, feature_names), indent=2, sort_keys=True) + "\n"
        write_tarball(hosted_dir / weights_file_name(name), {"model.json": model_json.encode("utf-8")})

    demo = splits["demo"]
    demo_ids = [f"demo-{k:04d}" for k in range(1, len(demo) + 1)]
    features_csv, labels_csv = raw_files(demo_ids, x[demo], malignant[demo], feature_names)
    paths = json.dumps({"data_path": "data", "labels_path": "labels"}, indent=2, sort_keys=True) + "\n"
    write_tarball(
        hosted_dir / DEMO_DATASET,
        {"paths.json": paths.encode(), "data/features.csv": features_csv, "labels/labels.csv": labels_csv},
    )

    hosted = {
        path.name: HostedAsset(path, sha256_file(path))
        for path in (hosted_dir / n for n in (*map(weights_file_name, MODELS), DEMO_DATASET))
    }
    return DemoAssets(out_dir, sites, hosted, feature_names, len(splits["train"]), len(demo))
