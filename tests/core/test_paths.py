"""Path safety: client values become paths only through `resolve_inside`, which keeps them inside."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from backend.app.core.errors import NotFoundError
from backend.app.core.paths import PathOutsideError, is_inside, resolve_inside
from backend.app.services.outputs import OutputStore

BACKEND = Path(__file__).parent.parent.parent / "backend" / "app"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    inside, uploads, outside = tmp_path / "voices", tmp_path / "uploads", tmp_path / "secret"
    for directory in (inside, uploads, outside):
        directory.mkdir()
    (inside / "a.wav").write_bytes(b"a")
    (uploads / "b.wav").write_bytes(b"b")
    (outside / "key.wav").write_bytes(b"k")
    os.symlink(outside / "key.wav", inside / "link-out.wav")
    os.symlink(outside, inside / "dir-out")
    os.symlink(inside / "a.wav", inside / "link-in.wav")
    return inside, uploads, outside


def test_names_and_paths_inside_resolve(roots: tuple[Path, Path, Path]) -> None:
    inside, uploads, _ = roots
    assert resolve_inside([inside, uploads], "a.wav") == ((inside / "a.wav").resolve(), inside.resolve())
    assert resolve_inside([inside, uploads], "b.wav")[1] == uploads.resolve()  # a bare name: any root
    assert resolve_inside([inside], str(inside / "sub" / ".." / "a.wav"))[0] == (inside / "a.wav").resolve()
    assert resolve_inside([inside], "link-in.wav")[0] == (inside / "a.wav").resolve()  # a link inside


@pytest.mark.parametrize(
    "value",
    [
        "../secret/key.wav",
        "../../../../etc/passwd",
        "/etc/passwd",
        "link-out.wav",  # a symlink leading out
        "dir-out/key.wav",  # through a linked directory
        "",
        "a.wav\x00.txt",
        "x" * 5000,
        "\x80" * 300,  # one name longer than the file system allows
        "d/" + "é" * 200,
    ],
)
def test_everything_leading_out_is_refused(roots: tuple[Path, Path, Path], value: str) -> None:
    inside, uploads, _ = roots
    with pytest.raises(PathOutsideError) as refused:
        resolve_inside([inside, uploads], value, "speaker_voice_path")
    assert refused.value.status_code == 400
    assert str(inside.parent) not in refused.value.message  # no server paths in the message


def test_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(PathOutsideError):
        resolve_inside([tmp_path], "loop")


def test_is_inside(roots: tuple[Path, Path, Path]) -> None:
    inside, _, _ = roots
    assert is_inside(inside / "a.wav", inside)
    assert not is_inside(inside / "link-out.wav", inside)


def test_an_output_name_linked_out_of_the_directory_is_not_served(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "outputs", ttl_hours=1, max_mb=10)
    (tmp_path / "private.wav").write_bytes(b"private")
    name = "0" * 32 + ".wav"
    os.symlink(tmp_path / "private.wav", store.directory / name)
    with pytest.raises(NotFoundError):
        store.path(name)
    saved = store.save(b"RIFF", "wav")
    assert store.path(saved).read_bytes() == b"RIFF"


# The only modules that open files or build paths, and why each is safe. A new one fails this test
# until it is reviewed and added here.
_FILE_ACCESS = {"open", "Path", "FileResponse", "unlink", "read_bytes", "write_bytes", "rmtree"}
_ALLOWED = {
    "core/paths.py": "resolve_inside itself",
    "core/config.py": "directories from the settings",
    "core/sections.py": "directories from the settings (their defaults)",
    "voices/library.py": "client names go through resolve_inside; listings use is_inside",
    "services/outputs.py": "generated names only (regex), then resolve_inside",
    "services/synthesis.py": "reads a VoiceInfo's path, which only the library makes",
    "api/routes/conversation.py": "serves the path OutputStore.path returned",
    "api/routes/page.py": "reads the page's own files once at start-up; requests look names up in memory",
    "audio/decode.py": "av.open on an in-memory buffer",
    "audio/encode.py": "av.open on an in-memory buffer",
    "storage/conversations.py": "DATA_DIR from the settings",
    "backends/embedded.py": "model files from the settings and installed packages",
    "backends/manifest.py": "model files from the settings",
    "backends/model_files.py": "model directories from the settings",
    "backends/whisper.py": "model directory from the settings",
    "backends/piper.py": "model file from the settings",
    "backends/vibevoice.py": "model directory from the settings",
    "backends/vibevoice_convert.py": "the checkpoint from the settings, converted into MODELS_DIR",
    "backends/moonshine_convert.py": "Moonshine's files in its installed package, converted into MODELS_DIR",
    "backends/transformers_llm.py": "model directory from the settings",
    "backends/llamacpp_llm.py": "the GGUF file from the settings, and its own private socket directory",
    "backends/llamacpp_dirs.py": "its own llama.cpp servers' private socket directories (temp dir)",
    "backends/cuda_libs.py": "library files of an installed package, found by importlib",
    "audio/vad.py": "silero-vad's ONNX file in its installed package, found by importlib",
    "audio/turn.py": "Smart Turn's ONNX file in the installed pipecat-ai package, found by importlib",
    "api/protocols/wyoming/server.py": "the Unix socket WYOMING_URI names, from the settings",
    "storage/postgres.py": "ConnectionPool.open: a connection pool, no file",
    "selfcheck.py": "reads the default voice clip, a VoiceInfo path only the library makes",
}


def test_no_other_module_turns_values_into_paths() -> None:
    offenders = []
    for path in sorted(BACKEND.rglob("*.py")):
        relative = path.relative_to(BACKEND).as_posix()
        if relative in _ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in _FILE_ACCESS:
                    offenders.append(f"{relative}:{node.lineno} {name}()")
    assert offenders == [], "file access outside the path-safety modules: " + ", ".join(offenders)
