"""Which inference algorithm trains which model family: the matrix, read off the registry.

A cell is "yes" when the family's declared capabilities
(:class:`~pyro_vae.capabilities.Capabilities`) hold everything the algorithm
``requires``, else the reason (what it needs that the family lacks). Families and
algorithms added to :mod:`pyro_vae.registry` appear as rows and columns by themselves;
``tests/test_matrix.py`` trains every "yes" a few steps and checks every refusal, and
checks that the table in ``docs/inference_matrix.md`` and the README is this one.

    python -m pyro_vae.matrix          # prints the Markdown table
"""

from __future__ import annotations

from typing import Optional

from pyro_vae.registry import ALGORITHMS, FAMILIES, missing_capabilities


def cell(family: str, algorithm: str, hint: bool = False) -> Optional[str]:
    """None when ``algorithm`` trains ``family``, else why not ("needs ..."; ``hint``: and
    what to use instead, as the refusal says it)."""
    needs = missing_capabilities(FAMILIES[family].capabilities, algorithm, hint)
    return None if needs is None else f"needs {needs}"


def cells() -> dict[tuple[str, str], Optional[str]]:
    """Every ``(family, algorithm)`` pair of the registry and its :func:`cell`."""
    return {(f, a): cell(f, a) for f in FAMILIES for a in ALGORITHMS}


def markdown() -> str:
    """The matrix as a Markdown table: families as rows, algorithms as columns."""
    algorithms = list(ALGORITHMS)
    lines = ["| model \\ inference | " + " | ".join(f"`{a}`" for a in algorithms) + " |",
             "|---" * (len(algorithms) + 1) + "|"]
    for family in FAMILIES:
        row = [("yes" if (why := cell(family, a)) is None else why.replace("|", "\\|")) for a in algorithms]
        lines.append(f"| `{family}` | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
