"""OpenVoice V2's tone-colour converter (MIT, MyShell) for users who have its weights.

Source: the converter folder of OpenVoice's ``checkpoints_v2`` — ``config.json`` + ``checkpoint.pth`` (options
``config`` / ``checkpoint`` name other files). No weights ship with modelhost and the ``openvoice`` package is not
used (it is not on PyPI and pulls librosa, wavmark and more): the converter half of OpenVoice's VITS network —
posterior encoder, coupling flow, HiFi-GAN decoder and reference encoder, with the parameter names of its
checkpoints (``weight_g``/``weight_v`` for weight-normalised convolutions) — is rebuilt here with torch.

Conversion as in OpenVoice: the tone colour (a ``gin_channels`` vector from the reference encoder) of the source
speech and of the reference; the source's linear spectrogram goes through the posterior encoder and the flow
under the source colour, back through the flow under the reference colour, then the decoder. No watermark is
added (OpenVoice adds one with wavmark when it is installed). Options: ``tau`` (0.3), ``seed`` (0), ``threads``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from modelhost.backends.base import resolve_source
from modelhost.backends.voice_conversion import VoiceConversionBackend
from modelhost.errors import BadInput

if TYPE_CHECKING:
    import numpy as np
    import torch

LRELU_SLOPE = 0.1
REFERENCE_FILTERS = (32, 32, 64, 64, 128, 128)


def build_converter(config: dict[str, Any]) -> Any:
    """The converter network for an OpenVoice ``config.json`` (``data`` and ``model`` sections), random weights."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class WeightNormConv(nn.Module):
        """A convolution whose weight is ``weight_g * weight_v / ‖weight_v‖`` (norm over all but dim 0), stored under
        the names torch's legacy ``weight_norm`` gives them, so OpenVoice checkpoints load as they are."""

        def __init__(
            self, kind: str, cin: int, cout: int, kernel: Any, stride: Any = 1, padding: Any = 0, dilation: int = 1
        ):
            super().__init__()
            base_cls = {"1d": nn.Conv1d, "2d": nn.Conv2d, "t1d": nn.ConvTranspose1d}[kind]
            base = base_cls(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation)
            self.kind, self.stride, self.padding, self.dilation = kind, stride, padding, dilation
            weight = base.weight.detach()
            self.weight_v = nn.Parameter(weight.clone())
            self.weight_g = nn.Parameter(self._norm(weight))
            self.bias = nn.Parameter(base.bias.detach().clone())

        @staticmethod
        def _norm(v: torch.Tensor) -> torch.Tensor:
            norm: torch.Tensor = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)
            return norm.reshape(-1, *([1] * (v.dim() - 1)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            weight = self.weight_v * (self.weight_g / self._norm(self.weight_v))
            if self.kind == "1d":
                return F.conv1d(x, weight, self.bias, self.stride, self.padding, self.dilation)
            if self.kind == "2d":
                return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation)
            return F.conv_transpose1d(x, weight, self.bias, self.stride, self.padding, 0, 1, self.dilation)

    class WaveNet(nn.Module):
        def __init__(self, hidden: int, kernel: int, dilation_rate: int, layers: int, gin: int):
            super().__init__()
            self.hidden, self.layers = hidden, layers
            self.in_layers = nn.ModuleList()
            self.res_skip_layers = nn.ModuleList()
            if gin:
                self.cond_layer = WeightNormConv("1d", gin, 2 * hidden * layers, 1)
            for i in range(layers):
                dilation = dilation_rate**i
                pad = (kernel * dilation - dilation) // 2
                self.in_layers.append(WeightNormConv("1d", hidden, 2 * hidden, kernel, padding=pad, dilation=dilation))
                out = 2 * hidden if i < layers - 1 else hidden
                self.res_skip_layers.append(WeightNormConv("1d", hidden, out, 1))

        def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
            output = torch.zeros_like(x)
            cond = self.cond_layer(g) if g is not None else None
            h = self.hidden
            for i in range(self.layers):
                act = self.in_layers[i](x)
                if cond is not None:
                    act = act + cond[:, i * 2 * h : (i + 1) * 2 * h, :]
                act = torch.tanh(act[:, :h]) * torch.sigmoid(act[:, h:])
                res_skip = self.res_skip_layers[i](act)
                if i < self.layers - 1:
                    x = (x + res_skip[:, :h]) * mask
                    output = output + res_skip[:, h:]
                else:
                    output = output + res_skip
            return output * mask

    class PosteriorEncoder(nn.Module):
        def __init__(self, cin: int, cout: int, hidden: int, gin: int):
            super().__init__()
            self.cout = cout
            self.pre = nn.Conv1d(cin, hidden, 1)
            self.enc = WaveNet(hidden, 5, 1, 16, gin)
            self.proj = nn.Conv1d(hidden, 2 * cout, 1)

        def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, tau: float, noise: Any) -> Any:
            x = self.enc(self.pre(x) * mask, mask, g)
            mean, log_scale = torch.split(self.proj(x) * mask, self.cout, dim=1)
            eps = torch.randn(mean.shape, generator=noise, dtype=mean.dtype)
            return (mean + eps * tau * torch.exp(log_scale)) * mask

    class Coupling(nn.Module):
        def __init__(self, channels: int, hidden: int, gin: int):
            super().__init__()
            self.half_channels = channels // 2
            self.pre = nn.Conv1d(self.half_channels, hidden, 1)
            self.enc = WaveNet(hidden, 5, 1, 4, gin)
            self.post = nn.Conv1d(hidden, self.half_channels, 1)

        def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool) -> torch.Tensor:
            x0, x1 = torch.split(x, [self.half_channels, self.half_channels], 1)
            mean = self.post(self.enc(self.pre(x0) * mask, mask, g)) * mask
            x1 = (x1 - mean) * mask if reverse else mean + x1 * mask
            return torch.cat([x0, x1], 1)

    class Flip(nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool) -> torch.Tensor:
            return torch.flip(x, [1])

    class Flow(nn.Module):
        def __init__(self, channels: int, hidden: int, gin: int):
            super().__init__()
            self.flows = nn.ModuleList()
            for _ in range(4):
                self.flows.append(Coupling(channels, hidden, gin))
                self.flows.append(Flip())

        def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
            for flow in reversed(self.flows) if reverse else self.flows:
                x = flow(x, mask, g, reverse)
            return x

    class ResBlock(nn.Module):
        def __init__(self, channels: int, kernel: int, dilations: list[int], kind: str):
            super().__init__()
            self.kind = kind

            def conv(dilation: int) -> WeightNormConv:
                pad = (kernel * dilation - dilation) // 2
                return WeightNormConv("1d", channels, channels, kernel, padding=pad, dilation=dilation)

            if kind == "1":
                self.convs1 = nn.ModuleList(conv(d) for d in dilations)
                self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
            else:
                self.convs = nn.ModuleList(conv(d) for d in dilations)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.kind == "1":
                for c1, c2 in zip(self.convs1, self.convs2, strict=True):
                    x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
                return x
            for conv in self.convs:
                x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
            return x

    class Generator(nn.Module):
        def __init__(self, m: dict[str, Any], gin: int):
            super().__init__()
            initial = int(m["upsample_initial_channel"])
            self.kernels = len(m["resblock_kernel_sizes"])
            self.conv_pre = nn.Conv1d(int(m["inter_channels"]), initial, 7, 1, padding=3)
            self.ups = nn.ModuleList()
            self.resblocks = nn.ModuleList()
            channels = initial
            for i, (rate, kernel) in enumerate(zip(m["upsample_rates"], m["upsample_kernel_sizes"], strict=True)):
                cin, channels = initial // (2**i), initial // (2 ** (i + 1))
                self.ups.append(WeightNormConv("t1d", cin, channels, kernel, rate, (kernel - rate) // 2))
                for k, d in zip(m["resblock_kernel_sizes"], m["resblock_dilation_sizes"], strict=True):
                    self.resblocks.append(ResBlock(channels, k, d, str(m["resblock"])))
            self.conv_post = nn.Conv1d(channels, 1, 7, 1, padding=3, bias=False)
            if gin:
                self.cond = nn.Conv1d(gin, initial, 1)

        def forward(self, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
            x = self.conv_pre(x)
            if g is not None:
                x = x + self.cond(g)
            for i, up in enumerate(self.ups):
                x = up(F.leaky_relu(x, LRELU_SLOPE))
                blocks = self.resblocks[i * self.kernels : (i + 1) * self.kernels]
                x = sum((block(x) for block in blocks), torch.zeros_like(x)) / self.kernels
            return torch.tanh(self.conv_post(F.leaky_relu(x)))

    class ReferenceEncoder(nn.Module):
        def __init__(self, spec_channels: int, gin: int):
            super().__init__()
            self.spec_channels = spec_channels
            filters = (1, *REFERENCE_FILTERS)
            self.convs = nn.ModuleList(
                WeightNormConv("2d", filters[i], filters[i + 1], (3, 3), (2, 2), (1, 1))
                for i in range(len(REFERENCE_FILTERS))
            )
            bins = spec_channels
            for _ in REFERENCE_FILTERS:
                bins = (bins - 3 + 2) // 2 + 1
            self.gru = nn.GRU(REFERENCE_FILTERS[-1] * bins, 128, batch_first=True)
            self.proj = nn.Linear(128, gin)
            self.layernorm = nn.LayerNorm(spec_channels)

        def forward(self, spec: torch.Tensor) -> torch.Tensor:  # [N, frames, bins]
            out = self.layernorm(spec.reshape(spec.size(0), 1, -1, self.spec_channels))
            for conv in self.convs:
                out = F.relu(conv(out))
            out = out.transpose(1, 2)
            out = out.reshape(out.size(0), out.size(1), -1)
            _, hidden = self.gru(out)
            colour: torch.Tensor = self.proj(hidden.squeeze(0))
            return colour

    class Converter(nn.Module):
        def __init__(self, cfg: dict[str, Any]):
            super().__init__()
            m, data = cfg["model"], cfg["data"]
            spec_channels = int(data["filter_length"]) // 2 + 1
            gin, inter, hidden = int(m.get("gin_channels", 256)), int(m["inter_channels"]), int(m["hidden_channels"])
            self.zero_g = bool(m.get("zero_g", False))
            self.dec = Generator(m, gin)
            self.enc_q = PosteriorEncoder(spec_channels, inter, hidden, gin)
            self.flow = Flow(inter, hidden, gin)
            self.ref_enc = ReferenceEncoder(spec_channels, gin)

        def tone_colour(self, spec: torch.Tensor) -> torch.Tensor:
            colour: torch.Tensor = self.ref_enc(spec.transpose(1, 2)).unsqueeze(-1)
            return colour

        def convert(
            self, spec: torch.Tensor, source: torch.Tensor, target: torch.Tensor, tau: float, noise: Any
        ) -> Any:
            mask = torch.ones(1, 1, spec.size(-1), dtype=spec.dtype)
            z = self.enc_q(spec, mask, torch.zeros_like(source) if self.zero_g else source, tau, noise)
            z_hat = self.flow(self.flow(z, mask, source), mask, target, reverse=True)
            return self.dec(z_hat * mask, torch.zeros_like(target) if self.zero_g else target)

    return Converter(config)


def spectrogram(samples: torch.Tensor, data: dict[str, Any]) -> torch.Tensor:
    """OpenVoice's linear magnitude spectrogram: reflect padding of (n_fft − hop) / 2, no centring, Hann window."""
    import torch

    n_fft, hop, win = int(data["filter_length"]), int(data["hop_length"]), int(data["win_length"])
    pad = (n_fft - hop) // 2
    padded = torch.nn.functional.pad(samples.reshape(1, 1, -1), (pad, pad), mode="reflect").reshape(1, -1)
    stft = torch.stft(
        padded, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win), center=False, return_complex=True
    )
    return torch.sqrt(stft.real.pow(2) + stft.imag.pow(2) + 1e-6)


class OpenVoiceConversion(VoiceConversionBackend):
    requires: ClassVar[tuple[str, ...]] = ("numpy", "torch")

    def load(self) -> None:
        import torch

        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        folder = Path(resolve_source(self.spec.source))
        config_path = Path(self.options.get("config") or folder / "config.json")
        checkpoint_path = Path(self.options.get("checkpoint") or folder / "checkpoint.pth")
        for path in (config_path, checkpoint_path):
            if not path.is_file():
                raise BadInput(
                    f"OpenVoice converter file {path} not found: the source must be the converter folder of "
                    "checkpoints_v2 (config.json + checkpoint.pth)",
                    status=503,
                    code="model_files_missing",
                )
        self.config = json.loads(config_path.read_text(encoding="utf-8"))
        self.sample_rate = int(self.config["data"]["sampling_rate"])
        self.model = build_converter(self.config)
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        missing, _unexpected = self.model.load_state_dict(state, strict=False)
        if missing:
            shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
            raise BadInput(
                f"{checkpoint_path} is not an OpenVoice converter checkpoint for this config: {len(missing)} "
                f"weights missing ({shown})",
                status=503,
                code="model_load_failed",
            )
        self.model.eval()
        self.tau = float(self.options.get("tau", 0.3))
        self.seed = int(self.options.get("seed", 0))

    def _colour(self, samples: np.ndarray) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            colour: torch.Tensor = self.model.tone_colour(
                spectrogram(torch.from_numpy(samples).float(), self.config["data"])
            )
            return colour

    def analyse_reference(self, reference: np.ndarray) -> torch.Tensor:
        return self._colour(reference)

    def convert(self, audio: np.ndarray, reference: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
        import torch

        noise = torch.Generator().manual_seed(self.seed)
        source = self._colour(audio)
        with torch.inference_mode():
            spec = spectrogram(torch.from_numpy(audio).float(), self.config["data"])
            out = self.model.convert(spec, source, reference, self.tau, noise)
        samples = out[0, 0].numpy()
        return samples, {"tau": self.tau, "colour_distance": float(torch.dist(source, reference))}

    def info(self) -> dict[str, Any]:
        return {**super().info(), "packages": ["torch"]}
