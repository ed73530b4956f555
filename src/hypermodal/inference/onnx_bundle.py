"""The ONNX model bundle: a model that predicts without PyTorch, in one zip file.

A bundle (``*.onnx.zip``, written by :func:`hypermodal.inference.onnx_export.export_onnx`)
holds three members::

    model.onnx    the CNN: input ``image`` float32 (B, 1, T, T) in [0, 1], output ``logits``
                  (B, classes). In an fp32 bundle every weight that float16 holds exactly (all
                  of them for the default model, whose weights are float16) is stored as a
                  float16 initializer ``<name>.fp16`` with a ``Cast`` to float32 named
                  ``<name>`` in front of the graph: the file is half the size and ONNX Runtime
                  folds the casts when the session is made, so it computes in float32 with the
                  exact weights. An int8 bundle holds the quantised graph (QDQ) as it is.
    arrays.npz    every array beside the CNN (numpy, read with ``allow_pickle=False``): the
                  feature forests (``evidence.*``) and, when the network runs at another size
                  than the preprocessed images, the resize matrix ``input.resize`` (T × S).
    meta.json     plain values: ``format`` (``hypermodal-onnx``), ``format_version``, the
                  checkpoint's ``model_name, num_classes, in_chans, vocabulary, preprocess,
                  train_size, config, split_hash, versions, epoch, history, best``, the evidence
                  model with ``{"__array__": key}`` where an array of ``arrays.npz`` goes,
                  ``onnx`` (precision, opset, input/output names, how the weights are stored,
                  the exporter's versions), ``int8`` (calibration and measured agreement, int8
                  bundles only), ``source`` (the checkpoint it came from) and
                  ``content_digest``.

``content_digest`` is ``"sha256:<hex>"`` over the rest of ``meta.json`` (sorted-key JSON) and
the SHA-256 of every other member; :func:`read_bundle` recomputes it, so a weight, a forest
node, a fusion weight or a class name changed after export is refused, as the tensor digest of a
``.pt`` checkpoint is (:mod:`hypermodal.inference.integrity`). Nothing here imports torch or onnx.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hypermodal.common.errors import CheckpointError
from hypermodal.common.files import atomic_path
from hypermodal.inference.integrity import check_settings

BUNDLE_FORMAT = "hypermodal-onnx"
BUNDLE_VERSION = 1
META_MEMBER = "meta.json"
MODEL_MEMBER = "model.onnx"
ARRAYS_MEMBER = "arrays.npz"
DIGEST_KEY = "content_digest"
#: the suffix bundles are written with
BUNDLE_SUFFIX = ".onnx.zip"
#: no member of a bundle is larger (a zip that claims more is refused before it is read)
MAX_MEMBER_BYTES = 4 << 30
#: where the resize matrix lives in ``arrays.npz``
RESIZE_KEY = "input.resize"
#: the suffix of a float16 initializer that a Cast widens to float32 at load
FP16_SUFFIX = ".fp16"
REQUIRED_KEYS = (
    "model_name",
    "num_classes",
    "vocabulary",
    "preprocess",
    "train_size",
    "onnx",
)
_ARRAY = "__array__"


@dataclass
class OnnxBundle:
    """What a bundle holds: ``meta`` (plain values), ``model`` (the ONNX bytes) and ``arrays``."""

    meta: dict[str, Any]
    model: bytes
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def precision(self) -> str:
        """``fp32`` or ``int8``: what the network computes in."""
        return str(self.meta["onnx"].get("precision", "fp32"))

    @property
    def resize(self) -> np.ndarray | None:
        """The (T × S) matrix that resizes a preprocessed image to the network's side, or None."""
        return self.arrays.get(RESIZE_KEY)

    def evidence_state(self) -> dict[str, Any] | None:
        """The evidence model's state (:meth:`hypermodal.evidence.EvidenceModel.from_state`)."""
        state = self.meta.get("evidence")
        return join_arrays(state, self.arrays) if state else None


# ----------------------------------------------------------------------------- arrays in JSON
def split_arrays(obj: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON-able copy of ``obj`` whose arrays (numpy, or tensors: anything with ``numpy()``)
    move into ``arrays`` under dotted keys, leaving ``{"__array__": key}`` in their place."""
    if isinstance(obj, np.ndarray) or hasattr(obj, "detach"):
        value = obj.detach().cpu().numpy() if hasattr(obj, "detach") else obj
        arrays[prefix] = np.ascontiguousarray(value)
        return {_ARRAY: prefix}
    if isinstance(obj, dict):
        return {str(k): split_arrays(v, f"{prefix}.{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [split_arrays(v, f"{prefix}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def join_arrays(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`split_arrays`."""
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            key = obj[_ARRAY]
            if key not in arrays:
                raise CheckpointError(f"bundle is incomplete: array {key!r} is missing")
            return arrays[key]
        return {k: join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_arrays(v, arrays) for v in obj]
    return obj


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _canonical(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def content_digest(meta: dict[str, Any], members: dict[str, bytes]) -> str:
    """``"sha256:<hex>"`` over ``meta`` (without the digest) and every member's SHA-256."""
    h = hashlib.sha256(_canonical(meta).encode())
    for name in sorted(members):
        h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(members[name]).digest())
    return f"sha256:{h.hexdigest()}"


# ----------------------------------------------------------------------------- write / read
def write_bundle(path: Path | str, bundle: OnnxBundle) -> dict[str, Any]:
    """Write ``bundle`` to ``path`` atomically (its digest computed here); return the path, the
    size in bytes and the file's SHA-256."""
    path = Path(path)
    members = {MODEL_MEMBER: bundle.model, ARRAYS_MEMBER: _npz_bytes(bundle.arrays)}
    meta = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, **bundle.meta}
    meta.pop(DIGEST_KEY, None)
    meta = json.loads(json.dumps(meta, default=str))  # as a reader will see it (str keys, lists)
    meta[DIGEST_KEY] = content_digest(meta, members)
    meta_bytes = json.dumps(meta, indent=1, default=str).encode()
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, data in {META_MEMBER: meta_bytes, **members}.items():
                # a fixed time stamp: the same model gives the same bytes
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compresslevel=6)
    bundle.meta = meta
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest}


def _read_members(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            missing = [m for m in (META_MEMBER, MODEL_MEMBER, ARRAYS_MEMBER) if m not in infos]
            if missing:
                raise CheckpointError(f"{path} is not a complete ONNX bundle: no {missing[0]}")
            big = [i.filename for i in infos.values() if i.file_size > MAX_MEMBER_BYTES]
            if big:
                raise CheckpointError(f"{path}: member {big[0]} is implausibly large")
            return {m: zf.read(m) for m in (META_MEMBER, MODEL_MEMBER, ARRAYS_MEMBER)}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated: {exc}") from exc


def read_bundle(path: Path | str) -> OnnxBundle:
    """Read and verify a bundle: format, version, required values, digest, sizes.

    Raises:
        CheckpointError: missing, truncated, not a bundle, from a newer hypermodal, changed
            after it was written (digest), or with sizes a model cannot be fed with.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model {path} does not exist")
    raw = _read_members(path)
    try:
        meta = json.loads(raw[META_MEMBER])
    except ValueError as exc:
        raise CheckpointError(f"{path}: meta.json is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{path} is a zip file but not a hypermodal ONNX bundle")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise CheckpointError(
            f"{path} has bundle format version {version!r}; this hypermodal reads up to "
            f"{BUNDLE_VERSION} (upgrade hypermodal)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    members = {k: v for k, v in raw.items() if k != META_MEMBER}
    if meta.get(DIGEST_KEY) != content_digest(meta, members):
        raise CheckpointError(
            f"{path} is corrupt: content digest mismatch (it changed after it was written)"
        )
    check_settings(path, meta)
    try:
        with np.load(io.BytesIO(raw[ARRAYS_MEMBER]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: unreadable arrays.npz: {exc}") from exc
    return OnnxBundle(meta=meta, model=raw[MODEL_MEMBER], arrays=arrays, path=path)


# ----------------------------------------------------------------------------- weights (onnx)
def float_weights(model: bytes) -> dict[str, np.ndarray]:
    """Every float initializer of an fp32 bundle's graph under its float32 name (a ``.fp16``
    initializer widened), as PyTorch's state dict names them. Needs the ``onnx`` package."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model)
    out: dict[str, np.ndarray] = {}
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        name = init.name
        if name.endswith(FP16_SUFFIX) and array.dtype == np.float16:
            name, array = name[: -len(FP16_SUFFIX)], array.astype(np.float32)
        out[name] = array
    return out
