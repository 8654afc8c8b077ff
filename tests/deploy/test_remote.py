"""The ingress's view of a deployment's failure: the engine's own exception, not Ray's wrapper
(whose message names the remote process and carries its traceback, not the engine's words)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="ray[serve] is not installed (requirements-serve.txt)")

from ray.exceptions import RayTaskError

from backend.app.core.errors import UpstreamError
from backend.serve.remote import _unwrapped


def test_an_engine_error_crosses_the_handle_as_it_was_raised() -> None:
    cause = UpstreamError("the LLM server at http://vllm:8000/v1 did not answer")
    wrapped = RayTaskError("chat", "Traceback (most recent call last): ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, UpstreamError) and str(wrapped) != str(cause)  # Ray's text, not ours
    unwrapped = _unwrapped(wrapped)
    assert unwrapped is cause and str(unwrapped) == str(cause)


def test_a_wrapper_without_a_cause_is_kept() -> None:
    wrapped = RayTaskError("chat", "Traceback ...", None)
    assert _unwrapped(wrapped) is wrapped
