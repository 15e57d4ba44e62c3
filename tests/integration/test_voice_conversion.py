"""Voice-conversion backends, loaded as a worker loads them: world-vc (pyworld) and OpenVoice V2's converter from a
tiny random checkpoint this test writes (the real weights cannot be installed here). The e2e presentation test
runs world-vc in a real worker."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import pytest

from modelhost.backends.base import Backend
from modelhost.errors import BadInput
from modelhost.worker.protocol import WorkerSpec
from tests.support.audio import convert, flite_wav
from tests.support.openvoice import TINY_OPENVOICE


def wav_info(data: bytes) -> tuple[int, float]:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getframerate(), wav.getnframes() / wav.getframerate()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("vc")
    source = flite_wav("The weather today is cold and windy near the river.", "slt", folder / "src.wav")
    reference = flite_wav("Please call the office before noon on Monday.", "rms", folder / "ref.wav")
    return convert(source, folder / "src24.wav", "-ar", "24000"), reference


def backend(cls: type[Backend], source: str, **options: object) -> Backend:
    instance = cls(WorkerSpec("vc", "voice-conversion", "", source, "", options=dict(options)))
    instance.load()
    return instance


def test_world_conversion_moves_pitch_and_keeps_length(speech: tuple[Path, Path]) -> None:
    from modelhost.backends.speech.voice_world import WorldVoiceConversion

    source, reference = speech
    world = backend(WorldVoiceConversion, "pyworld")
    result = world.run({"response_format": "wav"}, {"file": source, "reference": reference})
    rate, seconds = wav_info(result["audio"])
    assert rate == 24_000
    assert seconds == pytest.approx(wav_info(source.read_bytes())[1], abs=0.01)  # timing kept: subtitles stay valid
    details = result["details"]
    assert details["source_f0_hz"] > 150 > details["reference_f0_hz"]  # slt is a female voice, rms a male one
    assert details["formant_warp"] < 1.0  # a longer vocal tract: formants move down
    again = world.run({"response_format": "wav"}, {"file": source, "reference": reference})
    assert again["audio"] == result["audio"]  # deterministic (and the reference analysis is cached)
    with pytest.raises(BadInput) as missing:
        world.run({}, {"file": source})
    assert missing.value.param == "reference"


def test_openvoice_converter_loads_a_checkpoint_and_converts(tmp_path: Path, speech: tuple[Path, Path]) -> None:
    import torch

    from modelhost.backends.speech.voice_openvoice import OpenVoiceConversion, build_converter

    folder = tmp_path / "converter"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_OPENVOICE))
    torch.manual_seed(0)
    network = build_converter(TINY_OPENVOICE)
    torch.save({"model": network.state_dict(), "iteration": 1}, folder / "checkpoint.pth")
    keys = set(network.state_dict())
    # OpenVoice's checkpoint layout: weight-normalised convolutions as weight_g/weight_v, the four sub-networks
    assert {"dec.ups.0.weight_g", "enc_q.enc.cond_layer.weight_v", "flow.flows.6.post.bias"} <= keys
    assert {"ref_enc.convs.5.weight_g", "ref_enc.gru.weight_ih_l0", "ref_enc.layernorm.weight"} <= keys

    source, reference = speech
    converter = backend(OpenVoiceConversion, str(folder))
    result = converter.run({"response_format": "wav"}, {"file": source, "reference": reference})
    rate, seconds = wav_info(result["audio"])
    assert rate == 16_000
    assert seconds == pytest.approx(wav_info(source.read_bytes())[1], abs=0.05)  # frames × hop
    assert result["details"]["colour_distance"] > 0

    torch.save({"model": {k: v for k, v in network.state_dict().items() if not k.startswith("dec.")}}, folder / "x.pth")
    with pytest.raises(BadInput) as broken:
        backend(OpenVoiceConversion, str(folder), checkpoint=str(folder / "x.pth"))
    assert broken.value.code == "model_load_failed"
