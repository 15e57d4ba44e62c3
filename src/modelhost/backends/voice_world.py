"""Offline voice matching with the WORLD vocoder (pyworld): no weights, signal processing only.

The speech is analysed into F0, spectral envelope and aperiodicity; then
1. F0 is mapped in the log domain so its mean and spread equal the reference speaker's;
2. the spectral envelope is warped along frequency by the factor (0.75–1.33) that best aligns the speech's
   long-term average envelope with the reference's below 5 kHz (vocal-tract length: formant positions);
3. the remaining difference of the long-term average envelopes (smoothed over ~1/3 octave, clipped to
   ±``max_eq_db``) is applied as a fixed equaliser (voice quality, spectral tilt);
   (the warp search ignores a straight-line difference — tilt, which step 3 handles — unless ``warp_detrend`` is off)
and WORLD resynthesises at the source's timing, loudness matched to the source. It changes what a speaker
encoder sees (pitch, formants, timbre) but not the speaker's prosody or accent: docs/models.md has the measured
effect on speaker similarity and word error rate.

Options: ``sample_rate`` (24000), ``frame_period_ms`` (5.0), ``max_eq_db`` (24.0), ``formant_warp`` (true),
``warp_detrend`` (true), ``pitch`` (true), ``equalise`` (true).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost.backends.voice_conversion import VoiceConversionBackend
from modelhost.errors import BadInput

if TYPE_CHECKING:
    import numpy as np

WARP_MIN, WARP_MAX, WARP_STEPS = 0.75, 1.33, 59
ALIGN_MAX_HZ = 5000.0


@dataclass(frozen=True)
class VoiceProfile:
    """What conversion needs from a voice: log-F0 statistics and the long-term log envelope of voiced frames."""

    log_f0_mean: float
    log_f0_std: float
    log_envelope: np.ndarray  # mean log power per FFT bin over voiced frames


def import_pyworld() -> Any:
    """The pyworld module. pyworld ≤ 0.3.5's ``__init__`` imports ``pkg_resources`` (gone from setuptools ≥ 81) only
    to read its version, so when that fails the compiled extension is loaded directly (it is the whole API)."""
    try:
        import pyworld

        return pyworld
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    spec = importlib.util.find_spec("pyworld")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pyworld")
    folder = Path(next(iter(spec.submodule_search_locations)))
    extension = next(folder.glob("pyworld*.so"), None) or next(folder.glob("pyworld*.pyd"), None)
    if extension is None:
        raise ModuleNotFoundError("pyworld's compiled extension is missing")
    loader = importlib.machinery.ExtensionFileLoader("pyworld", str(extension))
    module_spec = importlib.util.spec_from_file_location("pyworld", extension, loader=loader)
    if module_spec is None:
        raise ModuleNotFoundError("pyworld")
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module


class WorldVoiceConversion(VoiceConversionBackend):
    def load(self) -> None:
        try:
            self._world = import_pyworld()
        except ImportError as exc:
            raise BadInput(
                "pyworld is not installed in this worker's environment: pip install 'modelhost[speech]'",
                status=503,
                code="model_package_missing",
            ) from exc
        self.sample_rate = int(self.options.get("sample_rate", 24_000))
        self.frame_period = float(self.options.get("frame_period_ms", 5.0))
        self.max_eq_db = float(self.options.get("max_eq_db", 24.0))
        self.use_warp = bool(self.options.get("formant_warp", True))
        self.use_pitch = bool(self.options.get("pitch", True))
        self.use_eq = bool(self.options.get("equalise", True))
        self.warp_detrend = bool(self.options.get("warp_detrend", True))

    def _analyse(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import numpy as np

        pyworld = self._world
        x = samples.astype(np.float64)
        f0, times = pyworld.dio(x, self.sample_rate, frame_period=self.frame_period)
        f0 = pyworld.stonemask(x, f0, times, self.sample_rate)
        envelope = pyworld.cheaptrick(x, f0, times, self.sample_rate)
        aperiodicity = pyworld.d4c(x, f0, times, self.sample_rate)
        return f0, envelope, aperiodicity

    def _profile(self, f0: np.ndarray, envelope: np.ndarray) -> VoiceProfile:
        import numpy as np

        voiced = f0 > 0
        if voiced.sum() < 20:
            raise BadInput("no voiced speech found in the recording", param="reference", code="no_speech")
        log_f0 = np.log(f0[voiced])
        log_env = np.log(envelope[voiced] + 1e-12).mean(axis=0)
        return VoiceProfile(float(log_f0.mean()), float(max(log_f0.std(), 1e-3)), log_env)

    def analyse_reference(self, reference: np.ndarray) -> VoiceProfile:
        f0, envelope, _ = self._analyse(reference)
        return self._profile(f0, envelope)

    def _warp(self, log_env: np.ndarray, alpha: float) -> np.ndarray:
        """Envelope with formants moved by ``alpha``: new(f) = old(f / alpha), along the last axis."""
        import numpy as np

        bins = log_env.shape[-1]
        freqs = np.arange(bins, dtype=np.float64)
        source = np.clip(freqs / alpha, 0, bins - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, bins - 1)
        frac = source - low
        warped: np.ndarray = log_env[..., low] * (1 - frac) + log_env[..., high] * frac
        return warped

    def _best_warp(self, source: np.ndarray, target: np.ndarray) -> float:
        import numpy as np

        bins = source.shape[-1]
        top = int(ALIGN_MAX_HZ / (self.sample_rate / 2) * (bins - 1))
        target_band = target[1:top] - target[1:top].mean()
        # with ``warp_detrend`` a straight line (spectral tilt, which the equaliser handles) is removed from the
        # difference first, so the search aligns formant peaks rather than overall slope
        basis = np.vstack([np.ones(top - 1), np.linspace(-1.0, 1.0, top - 1)]).T
        best, best_error = 1.0, float("inf")
        for alpha in np.geomspace(WARP_MIN, WARP_MAX, WARP_STEPS):
            warped = self._warp(source, float(alpha))[1:top]
            residual = warped - warped.mean() - target_band
            if self.warp_detrend:
                coefficients, *_ = np.linalg.lstsq(basis, residual, rcond=None)
                residual = residual - basis @ coefficients
            error = float(np.mean(residual**2))
            if error < best_error:
                best, best_error = float(alpha), error
        return best

    def _smooth(self, values: np.ndarray) -> np.ndarray:
        """Average over ~1/3 octave around every bin (wider at high frequencies)."""
        import numpy as np

        bins = len(values)
        cumulative = np.concatenate([[0.0], np.cumsum(values)])
        out = np.empty_like(values)
        for k in range(bins):
            half = max(2, int(k * 0.12))
            lo, hi = max(0, k - half), min(bins, k + half + 1)
            out[k] = (cumulative[hi] - cumulative[lo]) / (hi - lo)
        return out

    def convert(self, audio: np.ndarray, reference: VoiceProfile) -> tuple[np.ndarray, dict[str, Any]]:
        import numpy as np

        pyworld = self._world
        f0, envelope, aperiodicity = self._analyse(audio)
        source = self._profile(f0, envelope)
        details: dict[str, Any] = {
            "source_f0_hz": round(float(np.exp(source.log_f0_mean)), 1),
            "reference_f0_hz": round(float(np.exp(reference.log_f0_mean)), 1),
        }
        new_f0 = f0.copy()
        if self.use_pitch:
            voiced = f0 > 0
            scaled = (np.log(f0[voiced]) - source.log_f0_mean) / source.log_f0_std
            new_f0[voiced] = np.exp(scaled * reference.log_f0_std + reference.log_f0_mean)
        log_env = np.log(envelope + 1e-12)
        alpha = self._best_warp(source.log_envelope, reference.log_envelope) if self.use_warp else 1.0
        details["formant_warp"] = round(alpha, 3)
        if alpha != 1.0:
            log_env = self._warp(log_env, alpha)
            aperiodicity = np.exp(self._warp(np.log(np.maximum(aperiodicity, 1e-6)), alpha))
        if self.use_eq:
            voiced = f0 > 0
            current = log_env[voiced].mean(axis=0) if voiced.any() else log_env.mean(axis=0)
            difference = self._smooth(reference.log_envelope - current)
            limit = self.max_eq_db / 10 * np.log(10)  # dB of power → natural log units
            log_env = log_env + np.clip(difference - difference.mean(), -limit, limit)
        out = pyworld.synthesize(
            np.ascontiguousarray(new_f0),
            np.ascontiguousarray(np.exp(log_env)),
            np.ascontiguousarray(np.clip(aperiodicity, 0.0, 1.0)),
            self.sample_rate,
            frame_period=self.frame_period,
        )[: len(audio)]
        if len(out) < len(audio):  # keep the exact length: slide timings and subtitles depend on it
            out = np.pad(out, (0, len(audio) - len(out)))
        source_rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-9)
        out_rms = float(np.sqrt(np.mean(out**2)) + 1e-9)
        out = out * (source_rms / out_rms)
        peak = float(np.max(np.abs(out))) if len(out) else 0.0
        if peak > 0.99:
            out = out * (0.99 / peak)
        return out.astype(np.float32), details
