"""Model promotion: a gate on the golden labeled store, a Triton canary, and a rollback verdict.

1. `gate`: score the serving model and the candidate on the same golden store (a labeled store
   with `ground_truth/`, e.g. `data/sample-store` or a `tools.synthesize` held-out store) with
   `tools.evaluate`, the full pipeline, then refuse the candidate (exit 3) when balanced
   accuracy or letter recognition drops by more than `--max-regression`, or more letters go
   unscored. The decision and both reports are written as JSON for the release record.
2. `canary`: print the manifests of a canary Triton Deployment serving the candidate repository
   (its own digest pin) behind the same Service: the Service balances over pods, so `--share`
   becomes canary replicas out of the total.
3. `verdict`: after the canary ran, decide from its health (ready/live probes, error rate) and
   the accuracy of its results (a report from the canary's partitions) whether to roll out or
   roll back; exit 0 promote, 4 roll back. The rollback itself is deleting the canary
   Deployment, which the release pipeline does on exit 4.
"""

import argparse
import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

EXIT_REFUSED = 3
EXIT_ROLLBACK = 4
GATED_METRICS = ("balanced_accuracy", "letter_recognition_accuracy")


class GateDecision(BaseModel):
    promote: bool
    reasons: list[str] = Field(default_factory=list)
    baseline: dict[str, float | int | None]
    candidate: dict[str, float | int | None]
    max_regression: float


def gate(
    baseline: dict[str, Any], candidate: dict[str, Any], max_regression: float = 0.01
) -> GateDecision:
    """Refuse a candidate that scores worse than the serving model by more than the margin."""
    reasons: list[str] = []
    for metric in GATED_METRICS:
        before, after = baseline.get(metric), candidate.get(metric)
        if after is None:
            reasons.append(f"candidate has no {metric}")
        elif before is not None and after < before - max_regression:
            reasons.append(f"{metric} {after:.4f} < {before:.4f} - {max_regression}")
    if candidate.get("letters_unscored", 0) > baseline.get("letters_unscored", 0):
        reasons.append(
            f"letters_unscored {candidate.get('letters_unscored')} > "
            f"{baseline.get('letters_unscored')}"
        )
    keep = (*GATED_METRICS, "letters_unscored", "expected_letters")
    return GateDecision(
        promote=not reasons,
        reasons=reasons,
        baseline={k: baseline.get(k) for k in keep},
        candidate={k: candidate.get(k) for k in keep},
        max_regression=max_regression,
    )


def canary_manifests(
    deployment: dict[str, Any], source: str, sha256: str, share: float, total_replicas: int
) -> list[dict[str, Any]]:
    """A canary copy of the Triton Deployment plus its repository pin, labelled so the Service
    (which selects only `app.kubernetes.io/name`) sends it `share` of the connections."""
    if not 0 < share < 1:
        raise ValueError("share must be between 0 and 1")
    canary_replicas = max(1, math.floor(share * total_replicas))
    namespace = deployment["metadata"]["namespace"]
    canary = copy.deepcopy(deployment)
    canary["metadata"]["name"] = "triton-asr-canary"
    for labels in (
        canary["metadata"]["labels"],
        canary["spec"]["template"]["metadata"]["labels"],
        canary["spec"]["selector"]["matchLabels"],
    ):
        labels["asr-platform/track"] = "canary"
    canary["spec"]["replicas"] = canary_replicas
    pod = canary["spec"]["template"]["spec"]
    for init in pod.get("initContainers", []):
        for env in init.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref and ref["name"] == "triton-model-repository":
                ref["name"] = "triton-model-repository-canary"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "triton-model-repository-canary",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "triton-asr", "asr-platform/track": "canary"},
        },
        "data": {"source": source, "sha256": sha256},
    }
    return [config, canary]


class CanaryObservation(BaseModel):
    ready: bool
    live: bool
    error_rate: float = Field(ge=0, le=1)


def verdict(
    observation: CanaryObservation,
    baseline: dict[str, Any],
    canary: dict[str, Any],
    max_regression: float = 0.01,
    max_error_rate: float = 0.01,
) -> GateDecision:
    """Roll out only when the canary is healthy and its results pass the same gate."""
    decision = gate(baseline, canary, max_regression)
    health: list[str] = []
    if not (observation.ready and observation.live):
        health.append(f"canary not healthy (ready={observation.ready}, live={observation.live})")
    if observation.error_rate > max_error_rate:
        health.append(f"canary error rate {observation.error_rate:.3f} > {max_error_rate}")
    reasons = health + decision.reasons
    return decision.model_copy(update={"promote": not reasons, "reasons": reasons})


def _evaluate(store: Path, model_dir: Path) -> dict[str, Any]:
    from tools.evaluate.__main__ import evaluate

    return evaluate(store.resolve(), model_dir.resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deploy.promotion")
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("gate", help="score both models on the golden store and decide")
    g.add_argument("--golden-store", type=Path, required=True)
    g.add_argument("--baseline-model", type=Path, required=True)
    g.add_argument("--candidate-model", type=Path, required=True)
    g.add_argument("--max-regression", type=float, default=0.01)
    g.add_argument("--out", type=Path, default=Path("build/promotion.json"))
    c = commands.add_parser("canary", help="print the canary Deployment for the candidate")
    c.add_argument("--deployment", type=Path, default=Path("deploy/triton/deployment.yaml"))
    c.add_argument("--source", required=True)
    c.add_argument("--sha256", required=True)
    c.add_argument("--share", type=float, default=0.1)
    c.add_argument("--total-replicas", type=int, default=10)
    v = commands.add_parser("verdict", help="roll out or roll back after the canary")
    v.add_argument("--baseline-report", type=Path, required=True)
    v.add_argument("--canary-report", type=Path, required=True)
    v.add_argument("--ready", choices=("true", "false"), required=True)
    v.add_argument("--live", choices=("true", "false"), required=True)
    v.add_argument("--error-rate", type=float, required=True)
    v.add_argument("--max-regression", type=float, default=0.01)
    args = parser.parse_args(argv)

    if args.command == "canary":
        deployment = yaml.safe_load(args.deployment.read_text())
        docs = canary_manifests(
            deployment, args.source, args.sha256, args.share, args.total_replicas
        )
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
        return 0
    if args.command == "gate":
        baseline = _evaluate(args.golden_store, args.baseline_model)
        candidate = _evaluate(args.golden_store, args.candidate_model)
        decision = gate(baseline, candidate, args.max_regression)
        exit_refused = EXIT_REFUSED
    else:
        observation = CanaryObservation(
            ready=args.ready == "true", live=args.live == "true", error_rate=args.error_rate
        )
        decision = verdict(
            observation,
            json.loads(args.baseline_report.read_text()),
            json.loads(args.canary_report.read_text()),
            args.max_regression,
        )
        exit_refused = EXIT_ROLLBACK
    out = getattr(args, "out", None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(decision.model_dump_json(indent=2))
    sys.stdout.write(
        ("PROMOTE" if decision.promote else "REFUSED: " + "; ".join(decision.reasons)) + "\n"
    )
    return 0 if decision.promote else exit_refused


if __name__ == "__main__":
    sys.exit(main())
