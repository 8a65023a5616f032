"""Build weights/phd-fused-v0.safetensors, the model `phd suggest` uses by default.

    python scripts/build_default_model.py ../shared/data/phd2/phd2-test-dev.csv

What it holds (and the model card, weights/README.md, says the same):
- the temporal prior, *trained* on the PHD^2 annotations given (all users);
- SVM-D in its untrained, principled form: weight -1 on the distance to the
  nearest history GIF and 0 on the other 19 (the paper's Max Similarity
  baseline), on features centred on the video's mean segment feature;
- no FNN: PHD-CA contributes nothing until it is trained on real C3D features
  (`phd train content`, which needs Sports-1M weights and PHD^2's videos);
- backbone "any": no content term was fitted on any weights' features, so it
  serves any C3D weights of its family (a trained model records the sha256
  of the weights it was trained on, and refuses others).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from phdcli.features.spec import FeatureSpec
from phdcli.ranking.model import ANY_BACKBONE, FusedModel, default_model_path, save_model
from phdcli.training.annotations import load_annotations
from phdcli.training.evaluate import fit_prior

K = 20
# The prior's scores span about +-1 within a video; the similarity term's top
# segments differ by ~0.05-0.1 in cosine. omega_t = 0.05 lets the prior order
# segments the history cannot tell apart (and the whole video at a cold
# start) without overriding a clear match to the user's history.
OMEGA_T = 0.05


def build(annotations: Path, out: Path) -> FusedModel:
    prior = fit_prior(load_annotations(annotations))
    prior.fit_info.update({"annotations": annotations.name})
    svm_w = np.zeros(K)
    svm_w[0] = -1.0
    model = FusedModel(
        spec=FeatureSpec(),
        k=K,
        svm_w=svm_w,
        svm_b=0.0,
        omega=1.0,
        omega_t=OMEGA_T,
        fnn=None,
        prior=prior,
        centre="video_mean",
        provenance={
            "built_by": "scripts/build_default_model.py",
            "h_time": f"temporal prior trained on {annotations.name} (all users)",
            "h_svm": "untrained: Max Similarity (w = -1 on the nearest distance), not fitted",
            "h_fnn": "absent: PHD-CA not trained (no Sports-1M weights or PHD^2 videos here)",
            "omega": "set by hand, not fitted on validation users",
            "backbone": "any: no content term was fitted on features of particular weights",
        },
        backbone_sha256=ANY_BACKBONE,
    )
    save_model(model, out)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=default_model_path())
    args = parser.parse_args()
    build(args.annotations, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
