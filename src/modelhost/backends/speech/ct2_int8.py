"""An int8 copy of a CTranslate2 Whisper model on disk, so that loading it does not quantize (cold start).

CTranslate2 quantizes a float16/float32 ``model.bin`` every time it loads it with compute type int8: for whisper
tiny.en (75 MB of float16) that is most of the load (0.34 s, against 0.075 s from an int8 file, in forked workers on
the shared 2-core host). ``int8_model_directory`` writes, once per source model and ctranslate2 version, a model
directory under ``<data_dir>/cache/ct2-int8/`` whose ``model.bin`` holds what the loader would make of the source:

* every weight matrix named ``…/weight`` (linear layers, the token embeddings; not the encoder's convolutions, which
  the loader keeps in float) as int8 with a float32 scale per row, ``<name>_scale`` — CTranslate2's own scheme:
  scale = 127 / max |row|, values rounded half to even;
* every other float16 variable as float32 (exact), the rest unchanged; aliases kept.

The other files of the source (config, tokenizer, vocabulary) are copied beside it. Before the copy is used it is
checked against the source: both are loaded, one after the other, and must give bit-identical encoder output and
decoder scores on a fixed input; a copy that differs (a ctranslate2 whose quantization is not this one) is
discarded, a marker remembers it, and the source is loaded as before. Models that are not ``WhisperSpec`` files of
binary version 6, or hold other weight types, are left alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import struct
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

#: Bumped when the conversion changes: the cached copies of an older one are not used.
CONVERSION_VERSION = 1
BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
#: CTranslate2's dtype ids in ``model.bin``.
DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
DTYPE_IDS = {name: number for number, name in DTYPES.items()}


class NotConvertible(Exception):
    """The model is not one this conversion handles (another spec, binary version or weight type)."""


def cache_key(model_bin: Path) -> str:
    """Names the copy of ``model_bin``: its real path, size and mtime, the ctranslate2 version and this conversion's
    version (a new library or a changed source is converted and checked again)."""
    import ctranslate2

    st = model_bin.stat()
    ident = f"{model_bin.resolve()}|{st.st_size}|{st.st_mtime_ns}|{ctranslate2.__version__}|{CONVERSION_VERSION}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def int8_model_directory(source_dir: str, data_dir: str) -> str | None:
    """The directory of the checked int8 copy of the CTranslate2 Whisper model in ``source_dir``, built (and
    checked) on first use; None when there is none to use (not convertible, the check failed, no data dir)."""
    model_bin = Path(source_dir) / "model.bin"
    if not data_dir or not model_bin.is_file():
        return None
    root = Path(data_dir) / "cache" / "ct2-int8"
    key = cache_key(model_bin)
    target = root / key
    if (target / "model.bin").is_file():
        return str(target)
    failed = root / f"{key}.failed"
    if failed.exists():
        return None
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building it: wait for it
        if (target / "model.bin").is_file():
            return str(target)
        if failed.exists():
            return None
        partial = root / f"{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        started = time.perf_counter()
        try:
            partial.mkdir()
            convert(Path(source_dir), partial)
            problem = differs(Path(source_dir), partial)
            if problem:
                failed.write_text(f"{source_dir}: {problem}\n")
                log.warning("the int8 copy of %s does not match it (%s); loading the source", source_dir, problem)
                return None
            os.replace(partial, target)
        except NotConvertible as exc:
            failed.write_text(f"{source_dir}: {exc}\n")
            log.info("no int8 copy of %s: %s", source_dir, exc)
            return None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    log.info("wrote and checked an int8 copy of %s in %.2f s: %s", source_dir, time.perf_counter() - started, target)
    return str(target)


def convert(source_dir: Path, target_dir: Path) -> None:
    """Write the int8 ``model.bin`` of ``source_dir`` and copies of its other files into ``target_dir``."""
    with open(source_dir / "model.bin", "rb") as src, open(target_dir / "model.bin", "wb") as out:
        _convert_stream(src, out)
        out.flush()
        os.fsync(out.fileno())
    for item in source_dir.iterdir():
        if item.is_file() and item.name != "model.bin" and item.name != "__init__.py":
            shutil.copyfile(item, target_dir / item.name)


def _convert_stream(src: IO[bytes], out: IO[bytes]) -> None:
    import numpy as np

    version = _read(src, "I")
    if version != BINARY_VERSION:
        raise NotConvertible(f"model.bin binary version {version} (this conversion reads {BINARY_VERSION})")
    spec = _read_string(src)
    if spec != SPEC_NAME:
        raise NotConvertible(f"a {spec} model, not {SPEC_NAME}")
    revision = _read(src, "I")
    count = _read(src, "I")
    variables: list[tuple[str, list[int], str, bytes]] = []
    quantized = 0
    for _ in range(count):
        name = _read_string(src)
        shape = [_read(src, "I") for _ in range(_read(src, "B"))]
        dtype = DTYPES.get(_read(src, "B"))
        size = _read(src, "I")
        data = _read_exactly(src, size)
        if dtype is None or dtype == "bfloat16":
            raise NotConvertible(f"variable {name} has a type this conversion does not handle ({dtype})")
        if dtype in ("float16", "float32") and _quantizable(name, shape):
            weight, scale = quantize(np.frombuffer(data, dtype=dtype).reshape(shape))
            variables.append((name, shape, "int8", weight.tobytes()))
            variables.append((f"{name}_scale", [shape[0]], "float32", scale.tobytes()))
            quantized += 1
        elif dtype == "float16":
            variables.append(
                (name, shape, "float32", np.frombuffer(data, dtype=np.float16).astype(np.float32).tobytes())
            )
        else:
            variables.append((name, shape, dtype, data))
    aliases = [(_read_string(src), _read_string(src)) for _ in range(_read(src, "I"))]
    if src.read(1):
        raise NotConvertible("model.bin has data after its aliases")
    if not quantized:
        raise NotConvertible("no float weight to quantize (already int8?)")
    out.write(struct.pack("<I", BINARY_VERSION))
    _write_string(out, spec)
    out.write(struct.pack("<II", revision, len(variables)))
    for name, shape, dtype, data in variables:
        _write_string(out, name)
        out.write(struct.pack("<B", len(shape)))
        out.write(struct.pack(f"<{len(shape)}I", *shape))
        out.write(struct.pack("<BI", DTYPE_IDS[dtype], len(data)))
        out.write(data)
    out.write(struct.pack("<I", len(aliases)))
    for alias, name in aliases:
        _write_string(out, alias)
        _write_string(out, name)


def _quantizable(name: str, shape: list[int]) -> bool:
    """The variables CTranslate2's Whisper loader quantizes for int8: weight matrices, not the convolutions."""
    return name.endswith("/weight") and len(shape) == 2 and "conv" not in name


def quantize(weight: Any) -> tuple[Any, Any]:
    """CTranslate2's int8 quantization of a weight (rows along the first axis): (int8 values, float32 scale per
    row)."""
    import numpy as np

    values = weight.astype(np.float32).reshape(weight.shape[0], -1)
    amax = np.amax(np.absolute(values), axis=1)
    amax[amax == 0] = 127.0
    amax = np.maximum(amax, np.float32(127) / np.finfo(np.float32).max)
    scale = (np.float32(127.0) / amax).astype(np.float32)
    return np.rint(values * scale[:, None]).astype(np.int8).reshape(weight.shape), scale


def differs(source_dir: Path, copy_dir: Path) -> str | None:
    """Why the copy does not compute what the source computes with compute type int8 (encoder output and greedy
    decoder scores on a fixed input, compared bit for bit), or None when it does."""
    import ctranslate2
    import numpy as np

    def outputs(path: Path) -> tuple[Any, list[int], float]:
        model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=1)
        try:
            rng = np.random.default_rng(0)
            features = rng.uniform(-1.0, 1.5, (1, model.n_mels, 200)).astype(np.float32)
            encoded = model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)
            prompt = [[50257 if not model.is_multilingual else 50258]]
            result = model.generate(encoded, prompt, beam_size=1, max_length=8, return_scores=True)[0]
            return np.array(encoded), list(result.sequences_ids[0]), float(result.scores[0])
        finally:
            del model

    expected = outputs(source_dir)
    got = outputs(copy_dir)
    if not np.array_equal(expected[0], got[0]):
        return f"encoder output differs by up to {float(np.abs(expected[0] - got[0]).max()):g}"
    if expected[1:] != got[1:]:
        return f"decoder output differs: {expected[1:]} vs {got[1:]}"
    return None


def _read(src: IO[bytes], fmt: str) -> int:
    size = struct.calcsize("<" + fmt)
    value: int = struct.unpack("<" + fmt, _read_exactly(src, size))[0]
    return value


def _read_exactly(src: IO[bytes], size: int) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise NotConvertible("model.bin ends early")
    return data


def _read_string(src: IO[bytes]) -> str:
    length = _read(src, "H")
    return _read_exactly(src, length)[:-1].decode("utf-8")


def _write_string(out: IO[bytes], text: str) -> None:
    data = text.encode("utf-8") + b"\0"
    out.write(struct.pack("<H", len(data)))
    out.write(data)
