"""A tiny OpenVoice V2 converter config (random weights are built by the tests): the real weights do not install
offline, so the loading and inference path of the openvoice-v2 backend is tested with this shape."""

from __future__ import annotations

from typing import Any

TINY_OPENVOICE: dict[str, Any] = {
    "_version_": "v2",
    "data": {"sampling_rate": 16000, "filter_length": 128, "hop_length": 32, "win_length": 128, "n_speakers": 0},
    "model": {
        "zero_g": True,
        "inter_channels": 8,
        "hidden_channels": 8,
        "filter_channels": 16,
        "n_heads": 2,
        "n_layers": 2,
        "kernel_size": 3,
        "p_dropout": 0.1,
        "resblock": "1",
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3, 5]],
        "upsample_rates": [4, 8],
        "upsample_initial_channel": 16,
        "upsample_kernel_sizes": [8, 16],
        "gin_channels": 16,
    },
}
