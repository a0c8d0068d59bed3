"""The input kinds registry (#26.5): the extensions, decoder and front end of each kind come from
:data:`pipeline.kinds.KINDS`, and a :class:`Modality` is a ``str`` wherever one travels."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pytest
import torch

import ghostnet
from pipeline import discover
from pipeline.config import MODALITIES, RunConfig
from pipeline.kinds import KINDS, FrontEnd, Modality, kind_of


def test_every_registered_kind_has_a_decoder_and_a_front_end_for_its_models():
    for modality, kind in KINDS.items():
        assert callable(kind.decoder()), modality
        assert isinstance(kind.front_end(), FrontEnd), modality
        assert all(e.startswith(".") and e == e.lower() for e in kind.extensions), modality
    extensions = [e for kind in KINDS.values() for e in kind.extensions]
    assert len(extensions) == len(set(extensions)), "an extension belongs to one kind"
    assert not set(extensions) & discover.MANIFEST_EXTENSIONS
    assert MODALITIES == (*KINDS, "auto")


@pytest.mark.parametrize("modality", list(Modality))
def test_a_front_end_turns_its_example_batch_into_the_models_input(modality):
    """What compile's warm-up and every batch go through: host inputs -> model input tensor."""
    meta = ghostnet.create_model("ghostnet_050", num_classes=3, modality=modality).meta
    front = kind_of(modality).front_end()
    example = front.example_input(meta, 2)
    encoded = [row.tobytes() for row in example]
    host = front.host_inputs(encoded, meta)
    assert host.shape == example.shape and host.dtype == example.dtype
    x = front.model_input(meta, 1, torch.device("cpu"), torch.float32)(host)
    assert x.shape[:2] == (2, meta.in_chans) and x.is_contiguous(memory_format=torch.channels_last)


def test_listing_reads_the_extensions_from_the_registry(monkeypatch):
    uris = pa.array(["s3://b/a.JPG", "s3://b/b.flac", "s3://b/c.txt", "s3://b/d.xyz"])
    assert discover.modality_column(uris).to_pylist() == ["image", "audio", None, None]

    image = KINDS[Modality.IMAGE]
    monkeypatch.setitem(KINDS, Modality.IMAGE, dataclasses.replace(image, extensions=frozenset({".xyz"})))
    assert discover.modality_column(uris).to_pylist() == [None, "audio", None, "image"]


def test_a_modality_is_a_string_wherever_it_travels():
    config = RunConfig(inputs=("in",), output="out", model="ghostnet_050", modality="audio")
    assert config.modality is Modality.AUDIO and config.modalities == (Modality.AUDIO,)
    assert RunConfig(inputs=("in",), output="out", model="m", modality="auto").modalities == tuple(Modality)
    assert json.dumps(config.to_record()["modality"]) == '"audio"'
    assert f"{Modality.IMAGE}" == str(Modality.IMAGE) == "image" == Modality.IMAGE
    assert pa.array([Modality.IMAGE]).to_pylist() == ["image"]
    with pytest.raises(ValueError, match="no input kind 'video'"):
        kind_of("video")

