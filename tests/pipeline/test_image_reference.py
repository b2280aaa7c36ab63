"""Tests of check_image_reference: Docker's reference grammar, and the repository's own images."""

from __future__ import annotations

import re

import pytest

from cicd.pipeline.quantities import check_image_reference
from tests.conftest import BUSYBOX, PYTHON_IMAGE, ROOT

DIGEST = "sha256:" + "0123456789abcdef" * 4

VALID_REFERENCES = [
    "busybox",
    "busybox:latest",
    "cicd-python:bookworm",
    "debian-python:bookworm",
    "python:3.12-slim",
    "x",
    "3",
    "library/busybox",
    "docker.io/library/busybox:1.36",
    "registry.example.com:5000/team/app:1.0",
    "localhost/app",
    "localhost:5000/app",
    "127.0.0.1:9/cicd-test/missing:1",
    "[::1]:5000/app",
    "My-Registry/app",
    "team/a.b_c__d---e",
    "app:V1_x.y-z",
    "app:" + "t" * 128,
    f"busybox@{DIGEST}",
    f"busybox:1.36@{DIGEST}",
    "a" * 255,
]

# (case id, reference, end of the message after the value)
INVALID_REFERENCES = [
    ("parent segments", "../../../etc/passwd", "'..' is not a registry host"),
    ("absolute path", "/etc/passwd", "a repository name is lowercase"),
    ("uppercase path", "Debian", "the repository name must be lowercase"),
    ("uppercase after registry", "example.com/Team/app", "the repository name must be lowercase"),
    ("space", "debian bookworm", "a repository name is lowercase"),
    ("leading separator", "-app", "a repository name is lowercase"),
    ("trailing separator", "app_", "a repository name is lowercase"),
    ("three underscores", "a___b", "a repository name is lowercase"),
    ("empty component", "team//app", "a repository name is lowercase"),
    ("query", "app?x=1", "a repository name is lowercase"),
    ("percent", "app%2f", "a repository name is lowercase"),
    ("empty tag", "app:", "a tag has up to 128"),
    ("two tags", "app:1:2", "a repository name is lowercase"),
    ("tag starts with dot", "app:.1", "a tag has up to 128"),
    ("tag too long", "app:" + "t" * 129, "a tag has up to 128"),
    ("empty digest", "app@", "a digest is an algorithm"),
    ("short digest", "app@sha256:abc", "a digest is an algorithm"),
    ("digest without algorithm", "app@" + "a" * 64, "a digest is an algorithm"),
    ("registry port letters", "example.com:port/app", "is not a registry host"),
    ("registry dash end", "example-.com/app", "is not a registry host"),
    ("name too long", "a" * 256, "the name before the tag has 256 characters"),
    ("escape sequence", "busybox\x1b[0m", "a repository name is lowercase"),
]


@pytest.mark.parametrize("reference", VALID_REFERENCES)
def test_valid_reference(reference: str) -> None:
    check_image_reference(reference)


@pytest.mark.parametrize(
    ("reference", "hint"),
    [case[1:] for case in INVALID_REFERENCES],
    ids=[case[0] for case in INVALID_REFERENCES],
)
def test_invalid_reference(reference: str, hint: str) -> None:
    with pytest.raises(ValueError, match="^expected an image reference like busybox") as caught:
        check_image_reference(reference)
    assert hint in str(caught.value)
    assert str(caught.value).isprintable()


def test_test_images_valid() -> None:
    check_image_reference(BUSYBOX)
    check_image_reference(PYTHON_IMAGE)


@pytest.mark.parametrize(
    "relative",
    [
        ".cicd.yml",
        "README.md",
        "README.es.md",
        "docs/pipeline.md",
        "examples/hello/.cicd.yml",
        "examples/third-party/more-itertools.cicd.yml",
    ],
)
def test_repository_images_valid(relative: str) -> None:
    text = (ROOT / relative).read_text(encoding="utf-8")
    images = re.findall(r"^\s*image: ([^\s#{}&*]+)\s*$", text, flags=re.MULTILINE)
    assert images
    for image in images:
        check_image_reference(image)
