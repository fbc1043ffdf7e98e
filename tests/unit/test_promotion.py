"""Model promotion: the gate refuses a regression, the canary is a valid hardened Deployment
behind the same Service, and a failing canary is rolled back."""

import json
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tools.deploy.policy import manifest_violations
from tools.deploy.promotion import (
    EXIT_REFUSED,
    EXIT_ROLLBACK,
    CanaryObservation,
    canary_manifests,
    gate,
    main,
    verdict,
)

ROOT = Path(__file__).resolve().parents[2]
BASELINE = {"balanced_accuracy": 0.961, "letter_recognition_accuracy": 0.93, "letters_unscored": 0}


def test_gate_promotes_an_equal_or_better_candidate() -> None:
    assert gate(BASELINE, {**BASELINE, "balanced_accuracy": 0.955}).promote  # within 0.01
    assert gate(BASELINE, {**BASELINE, "letter_recognition_accuracy": 0.95}).promote


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ({**BASELINE, "balanced_accuracy": 0.94}, "balanced_accuracy 0.9400 < 0.9610"),
        ({**BASELINE, "letter_recognition_accuracy": 0.90}, "letter_recognition_accuracy"),
        ({**BASELINE, "letters_unscored": 3}, "letters_unscored 3 > 0"),
        ({**BASELINE, "balanced_accuracy": None}, "candidate has no balanced_accuracy"),
    ],
)
def test_gate_refuses_a_regression(candidate: dict, reason: str) -> None:
    decision = gate(BASELINE, candidate, max_regression=0.01)
    assert not decision.promote
    assert any(reason in r for r in decision.reasons), decision.reasons


def test_canary_is_valid_hardened_and_selected_by_the_service() -> None:
    deployment = yaml.safe_load((ROOT / "deploy" / "triton" / "deployment.yaml").read_text())
    service = yaml.safe_load((ROOT / "deploy" / "triton" / "service.yaml").read_text())
    config, canary = canary_manifests(
        deployment, "s3://asr-models-prod/triton-v2", "a" * 64, 0.1, 10
    )
    for doc in (config, canary):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert manifest_violations(canary) == []
    assert canary["spec"]["replicas"] == 1
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # The stable Deployment's selector must not adopt canary pods, and the canary pins its own repo.
    assert labels["asr-platform/track"] == "canary"
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    init_env = canary["spec"]["template"]["spec"]["initContainers"][0]["env"]
    refs = {e["valueFrom"]["configMapKeyRef"]["name"] for e in init_env if "valueFrom" in e}
    assert refs == {"triton-model-repository-canary"}
    assert config["data"] == {"source": "s3://asr-models-prod/triton-v2", "sha256": "a" * 64}


def test_verdict_rolls_back_on_failed_health_or_accuracy() -> None:
    healthy = CanaryObservation(ready=True, live=True, error_rate=0.0)
    assert verdict(healthy, BASELINE, BASELINE).promote
    sick = CanaryObservation(ready=False, live=True, error_rate=0.0)
    assert "not healthy" in verdict(sick, BASELINE, BASELINE).reasons[0]
    erroring = CanaryObservation(ready=True, live=True, error_rate=0.2)
    assert "error rate" in verdict(erroring, BASELINE, BASELINE).reasons[0]
    worse = {**BASELINE, "balanced_accuracy": 0.8}
    assert not verdict(healthy, BASELINE, worse).promote


def test_verdict_cli_exits_rollback(tmp_path: Path) -> None:
    (tmp_path / "canary.json").write_text(
        '{"balanced_accuracy": 0.5, "letter_recognition_accuracy": 0.5}'
    )
    (tmp_path / "base.json").write_text(json.dumps(BASELINE))
    args = [
        "verdict",
        "--baseline-report",
        str(tmp_path / "base.json"),
        "--canary-report",
        str(tmp_path / "canary.json"),
    ]
    assert main([*args, "--ready", "true", "--live", "true", "--error-rate", "0"]) == EXIT_ROLLBACK


@pytest.mark.e2e
def test_gate_scores_both_models_on_the_golden_store(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    """The real gate: the shipped model against an untrained one on the labeled sample store."""
    store = tmp_path / "golden"
    shutil.copytree(ROOT / "data" / "sample-store", store)
    demo = ROOT / "models" / "demo-letters"
    out = tmp_path / "decision.json"
    code = main(
        [
            "gate",
            "--golden-store",
            str(store),
            "--baseline-model",
            str(demo),
            "--candidate-model",
            str(tiny_model_dir),
            "--out",
            str(out),
        ]
    )
    assert code == EXIT_REFUSED
    assert "REFUSED: balanced_accuracy" in capsys.readouterr().out
    assert '"promote": false' in out.read_text()
