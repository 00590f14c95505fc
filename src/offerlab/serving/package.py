"""Copy the registry's serving models into the BentoML model store, so `bentoml build` packages them.

    python -m offerlab.serving.package          # champions (or OFFERLAB_<FAMILY>_MODEL) -> offerlab-<family>
    bentoml build                               # serving/bentofile.yaml lists offerlab-<family>:latest

A container built this way serves the packaged models (`OFFERLAB_MODEL_SOURCE=bento`, set in the
bentofile); set `OFFERLAB_MODEL_SOURCE=registry` and `MLFLOW_TRACKING_URI` to load from a registry
at start-up instead.
"""

from __future__ import annotations

import sys

from offerlab.registry import model_name
from offerlab.serving.models import FAMILIES, model_uri


def package(families: tuple[str, ...] = FAMILIES) -> dict[str, str]:
    """Import each family's MLflow model into the BentoML store; returns family -> BentoML tag."""
    import bentoml
    import mlflow

    from offerlab import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    tags = {}
    for family in families:
        uri = model_uri(family)
        m = bentoml.mlflow.import_model(model_name(family), uri, labels={"mlflow_uri": uri})
        tags[family] = str(m.tag)
    return tags


if __name__ == "__main__":
    for fam, tag in package(tuple(sys.argv[1:]) or FAMILIES).items():
        print(f"{fam}: {tag}")
