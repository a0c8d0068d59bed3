"""Fixtures for the ghostnet model library tests: one CPU thread, offline hub; S3 comes from the
shared `s3_endpoint` fixture (moto's server on 127.0.0.1 with the AWS environment set)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture
def s3_env(s3_endpoint: str) -> str:
    """The standard AWS environment points at the moto server; returns the endpoint URL."""
    return s3_endpoint
