"""The main demo's township characteristics (issue #15, item 7): ``data_raw/demo/townships.csv``
is reproduced byte for byte from the seed, pilots differ from the other townships as counties'
choices make them differ (standardized mean differences above 0.1), beds and staff follow the
township's size, and the files the demo report and its truth tests rest on are unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from evaluation.data.demo import TOWNSHIP_HEADERS, write_demo
from evaluation.paths import DEMO_DATA

# sha256 of the demo files as committed before the characteristics existed (commit b196f4b):
# the demo report, its notebooks' references and tests/test_demo*.py rest on these bytes.
UNCHANGED = {
    "panel.csv": "c49f1e127fc968b3ddefe865bc52340a6dc2ba31edbe81f1eade3948e9e2e3ed",
    "pilots.csv": "945c47c9f996fe68887eb629823babcbc926606a7c1473f354179d779c723423",
    "truth.csv": "e51be87eda8e63f5471d008fe8ae96df10e463a1040b8dedf1ac48a4f515145d",
    "design.json": "0f0163087efd9de3ad33b9515976dc97489efb4e2748ba2a0c5e97ab1cfe1475",
}
HEADERS = ["乡镇编码", "到县城距离（公里）", "床位数", "卫生技术人员数", "是否山区"]


def smd(a: np.ndarray, b: np.ndarray, binary: bool = False) -> float:
    """Standardized mean difference (Austin 2009, Stat Med 28:3083): difference in means over
    sqrt of the mean of the two variances (sample variances; p(1 - p) for a binary)."""
    if binary:
        spread = (a.mean() * (1 - a.mean()) + b.mean() * (1 - b.mean())) / 2
    else:
        spread = (a.var(ddof=1) + b.var(ddof=1)) / 2
    return float((a.mean() - b.mean()) / np.sqrt(spread))


@pytest.fixture(scope="module")
def townships():
    """townships.csv read as an analyst would, merged with the pilots and 2016 populations on 乡镇编码."""
    t = pd.read_csv(DEMO_DATA / "townships.csv", dtype={"乡镇编码": str})
    pilots = pd.read_csv(DEMO_DATA / "pilots.csv", dtype={"乡镇编码": str})
    panel = pd.read_csv(DEMO_DATA / "panel.csv", dtype={"乡镇编码": str})
    first = panel[panel["月份"] == "2016-01"][["乡镇编码", "乡镇名称", "常住人口"]]
    t = t.merge(first, on="乡镇编码", how="left", validate="one_to_one")
    t["pilot"] = t["乡镇编码"].isin(pilots["乡镇编码"])
    return t


def test_existing_demo_files_are_unchanged():
    for name, digest in UNCHANGED.items():
        assert hashlib.sha256((DEMO_DATA / name).read_bytes()).hexdigest() == digest, name


def test_generator_reproduces_the_township_table(tmp_path):
    write_demo(tmp_path)
    for name in ("townships.csv", "characteristics.json", *UNCHANGED):
        assert (tmp_path / name).read_bytes() == (DEMO_DATA / name).read_bytes(), name


def test_table_shape(townships):
    assert list(pd.read_csv(DEMO_DATA / "townships.csv", nrows=0).columns) == HEADERS
    assert list(TOWNSHIP_HEADERS.values()) == HEADERS
    assert len(townships) == 64 and townships["乡镇编码"].is_unique
    assert townships["常住人口"].notna().all()                      # every township of the panel, no other
    assert set(townships["是否山区"]) == {"是", "否"}
    assert townships["到县城距离（公里）"].between(2, 90).all()
    assert (townships["床位数"] >= 6).all() and (townships["卫生技术人员数"] > townships["床位数"]).all()
    assert townships["pilot"].sum() == 10


def test_pilots_are_nearer_larger_and_less_often_mountainous(townships):
    """Standardized mean differences, pilots minus the others, beyond 0.1 in the direction
    counties' choices give them (Austin 2009's threshold for meaningful imbalance); the values
    are those written in characteristics.json (to its 4 digits)."""
    p, c = townships[townships["pilot"]], townships[~townships["pilot"]]
    values = {
        "distance_km": smd(p["到县城距离（公里）"].to_numpy(float), c["到县城距离（公里）"].to_numpy(float)),
        "beds": smd(p["床位数"].to_numpy(float), c["床位数"].to_numpy(float)),
        "health_workers": smd(p["卫生技术人员数"].to_numpy(float), c["卫生技术人员数"].to_numpy(float)),
        "mountainous": smd((p["是否山区"] == "是").to_numpy(float), (c["是否山区"] == "是").to_numpy(float),
                           binary=True),
    }
    assert values["distance_km"] < -0.1 and values["mountainous"] < -0.1
    assert values["beds"] > 0.1 and values["health_workers"] > 0.1
    written = json.loads((DEMO_DATA / "characteristics.json").read_text(encoding="utf-8"))
    for name, value in values.items():
        assert written["standardized_mean_differences"][name] == pytest.approx(value, abs=5e-5), name


def test_beds_and_staff_follow_size_and_level(townships):
    """Beds are drawn as 1.1 per 1,000 residents x level (镇 1.15, 乡 0.8) x spread: their log
    correlation with the 2016 population is high (above 0.8; the log-uniform population's SD
    0.66 against a spread of 0.25 and the pilot shift gives about 0.9), towns have more beds per
    resident than townships, and health workers follow beds (6 + 1.25 per bed, spread 0.15)."""
    log_beds = np.log(townships["床位数"].to_numpy(float))
    assert np.corrcoef(log_beds, np.log(townships["常住人口"].to_numpy(float)))[0, 1] > 0.8
    per_resident = townships["床位数"] / townships["常住人口"]
    town = townships["乡镇名称"].str.endswith("镇")
    assert per_resident[town].median() > per_resident[~town].median()
    assert np.corrcoef(log_beds, np.log(townships["卫生技术人员数"].to_numpy(float)))[0, 1] > 0.9
